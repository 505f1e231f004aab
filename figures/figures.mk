# Rules for `make figures`; included by the top-level Makefile, which defines BIN and STAMP.
.PHONY: figures-all
figures-all: $(STAMP)
	$(BIN)/python -m figures
