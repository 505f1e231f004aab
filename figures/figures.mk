# Rules for `make figures`; included by the top-level Makefile, which defines BIN and STAMP.
#
# Every output depends on the script that draws it, the code it shares, the
# paper data it shows and the result files it reads, so `make figures` redraws
# only what changed. Result folders are globbed when make starts.
# Outputs: $(FIGURES_OUT)/<profile>/tableN.{md,tex,csv}, figureN.{png,pdf}; $(FIGURES_OUT)/audit.{md,json}.

FIGURES_OUT ?= outputs
FIGURES_METRIC ?= best
FIGURES_PROFILES := cpu_profile paper_scale
FIGURES_TABLES := table1 table2 table3 table4 table5 table7 table8
FIGURES_RUN = $(BIN)/python -m figures --out $(FIGURES_OUT) --metric $(FIGURES_METRIC)
FIGURES_COMMON := figures/__main__.py figures/collect.py figures/paper.py experiments/results.py
FIGURES_PLOT := $(FIGURES_COMMON) figures/plotting.py

# Result folders read by each output (the LLaMA runner files all runs of a model under one name).
figures_results_table1 := table1
figures_results_table2 := table2
figures_results_table3 := table3 commonsense_llama2_7b
figures_results_table4 := table4 commonsense_llama3_8b
figures_results_table5 := table5
figures_results_table7 := table7
figures_results_table8 := table8
figures_results_figure1 := figure1
figures_results_figure3 := figure3 table1
figures_results_figure2 := figure2 commonsense_llama2_7b
figures_results_figure4 := figure4 commonsense_llama2_7b
figures_results_figure5 := figure5 commonsense_llama2_7b
figures_results_figure6 := figure6 commonsense_llama3_8b
figures_script_figure1 := figures/vit_figures.py
figures_script_figure3 := figures/vit_figures.py
figures_script_figure2 := figures/llama_figures.py
figures_script_figure4 := figures/llama_figures.py
figures_script_figure5 := figures/llama_figures.py
figures_script_figure6 := figures/llama_figures.py

# $(1): profile, $(2): output name. The result files of that output in that profile, and their
# folders: a folder's modification time changes when a result is added or deleted.
figures_results = $(foreach e,$(figures_results_$(2)),$(wildcard results/$(1)/$(e) results/$(1)/$(e)/*.json))

define FIGURES_TABLE_RULE
$(FIGURES_OUT)/$(1)/$(2).md $(FIGURES_OUT)/$(1)/$(2).tex $(FIGURES_OUT)/$(1)/$(2).csv &: figures/tables.py figures/ordering.py \
		figures/paper_data/$(2).csv $(FIGURES_COMMON) $(call figures_results,$(1),$(2)) | $(STAMP)
	$(FIGURES_RUN) $(2) --profile $(1)
endef

define FIGURES_FIGURE_RULE
$(FIGURES_OUT)/$(1)/$(2).png $(FIGURES_OUT)/$(1)/$(2).pdf &: $(figures_script_$(2)) $(FIGURES_PLOT) \
		$(call figures_results,$(1),$(2)) | $(STAMP)
	$(FIGURES_RUN) $(2) --profile $(1)
endef

FIGURES_FIGURES := figure1 figure2 figure3 figure4 figure5 figure6
FIGURES_OUTPUTS := $(FIGURES_OUT)/audit.md $(FIGURES_OUT)/audit.json \
	$(foreach p,$(FIGURES_PROFILES),$(foreach t,$(FIGURES_TABLES),$(foreach x,md tex csv,$(FIGURES_OUT)/$(p)/$(t).$(x)))) \
	$(foreach p,$(FIGURES_PROFILES),$(foreach f,$(FIGURES_FIGURES),$(FIGURES_OUT)/$(p)/$(f).png $(FIGURES_OUT)/$(p)/$(f).pdf))

$(foreach p,$(FIGURES_PROFILES),$(foreach t,$(FIGURES_TABLES),$(eval $(call FIGURES_TABLE_RULE,$(p),$(t)))))
$(foreach p,$(FIGURES_PROFILES),$(foreach f,$(FIGURES_FIGURES),$(eval $(call FIGURES_FIGURE_RULE,$(p),$(f)))))

$(FIGURES_OUT)/audit.md $(FIGURES_OUT)/audit.json &: figures/audit.py figures/audit_claims.py \
		figures/audit_report.py figures/ordering.py $(FIGURES_COMMON) $(wildcard figures/paper_data/*.csv) | $(STAMP)
	$(FIGURES_RUN) audit

.PHONY: figures-all figures-force
figures-all: $(FIGURES_OUTPUTS)

## figures-force: redraw every table and figure whatever make thinks is up to date
figures-force: | $(STAMP)
	$(FIGURES_RUN) all
