"""Every claim of sections 3.2-3.2.4 and appendices A-C that the suite checks, in paper order.

Each claim has an id used by the tests' `@pytest.mark.claim(id, role=...)`
markers, a paraphrase with the paper's equation numbers, and the place in the
paper it comes from. The verdict is never stored here: `theory_tests.report`
derives it from the outcomes of the tests that carry the claim's id.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Claim:
    id: str
    title: str
    statement: str
    source: str


CLAIMS: list[Claim] = [
    Claim("prop1", "Proposition 1 (scalar toy example)",
          "For y = theta1 theta2 x with theta1, theta2, x > 0 and theta1 < theta2, lowering theta1 by "
          "delta1 reduces y at least as much as lowering theta2 by delta2, 'for any admissible' "
          "0 < delta_i << theta_i.", "section 3.2.1"),
    Claim("prop2", "Proposition 2 (sensitivity in a matrix product)",
          "||dW1 W2||_F / ||dW1||_F <= ||W2||_2 and ||W1 dW2||_F / ||dW2||_F <= ||W1||_2 for any "
          "non-zero perturbations, with equality attainable.", "section 3.2.2"),
    Claim("thm3.eq3", "Theorem 3, Eq. (3): W_Q bound",
          "sens_Q <= 2 min{(n-1) e^{-gamma_min}, 1} / sqrt(d) ||W_O|| ||W_V|| ||W_K|| ||X||^3.",
          "section 3.2.3, appendix A"),
    Claim("thm3.eq4", "Theorem 3, Eq. (4): W_K bound",
          "sens_K <= 2 min{(n-1) e^{-gamma_min}, 1} / sqrt(d) ||W_O|| ||W_V|| ||W_Q|| ||X||^3.",
          "section 3.2.3, appendix A"),
    Claim("thm3.eq5", "Theorem 3, Eq. (5): W_V bound",
          "sens_V <= ||W_O|| ||A|| ||X||.", "section 3.2.3, appendix A"),
    Claim("thm3.eq6", "Theorem 3, Eq. (6): W_O bound",
          "sens_O <= ||A|| ||W_V|| ||X||.", "section 3.2.3, appendix A"),
    Claim("thm3.unit_rows", "Theorem 3: the unit-norm-row hypothesis",
          "Theorem 3 assumes X has unit-norm rows; Eqs. (3)-(6) hold without that hypothesis (the proof "
          "never uses it).",
          "section 3.2.3"),
    Claim("thm3.multihead", "Theorem 3 transferred to multi-head attention",
          "With H heads (per-head slices, heads concatenated before W_O, logits scaled by 1/sqrt(d_h)), "
          "Eqs. (3)-(6) with gamma_min over all heads, sqrt(d_h) for sqrt(d) and max_h ||A_h|| for ||A||.",
          "section 3.2.3 (the paper states the single-head case only)"),
    Claim("appA.jacobian_trace", "Appendix A: ||J(a)||_2 <= 1 - ||a||^2",
          "The softmax Jacobian J(a) = diag(a) - a a^T has spectral norm at most 1 - ||a||_2^2.", "appendix A"),
    Claim("appA.trace_amax", "Appendix A: 1 - ||a||^2 <= 2 (1 - a_max)",
          "(1 + ||a||)(1 - ||a||) <= 2 (1 - a_max).", "appendix A"),
    Claim("appA.amax_margin", "Appendix A: 2 (1 - a_max) <= 2 min{(n-1) e^{-gamma}, 1}",
          "a_max >= 1 / (1 + (n-1) e^{-gamma}), hence 1 - a_max <= min{(n-1) e^{-gamma}, 1}.", "appendix A"),
    Claim("appA.eqA6", "Appendix A, Eq. (A.6): row-wise softmax derivative",
          "||D softmax(S)[dS]||_F <= 2 min{(n-1) e^{-gamma_min}, 1} ||dS||_F.", "appendix A"),
    Claim("thm4.B1", "Theorem 4 proof, Eq. (B.1): spherical-cap tail",
          "For u, v independent and uniform on S^{d-1}: Pr(|<u, v>| >= t) <= 2 exp(-(d-1) t^2 / 2).",
          "appendix B"),
    Claim("thm4.B2", "Theorem 4 proof, Eq. (B.2): union bound",
          "Pr(max_{i != j} |<x_i, x_j>| > t_delta) <= n(n-1) exp(-(d-1) t_delta^2 / 2) < delta.", "appendix B"),
    Claim("thm4.B3", "Theorem 4 proof, Eq. (B.3): margin on the event",
          "On the event max_{i != j} |<x_i, x_j>| <= t_delta, |S_ij| <= ||M|| t_delta / sqrt(d) for i != j, "
          "S_ii >= alpha c^2 / sqrt(d), hence gamma_min >= (alpha - beta t_delta) c^2 / sqrt(d) = a c^2.",
          "appendix B"),
    Claim("thm4.B4", "Theorem 4 proof, Eq. (B.4): Gershgorin",
          "On the same event, ||X||_2^2 <= 1 + (n-1) t_delta = chi_delta^2.", "appendix B"),
    Claim("thm4.conclusion", "Theorem 4: conclusion",
          "Under the hypotheses and c^2 >= the threshold of Eq. (7), with probability at least 1 - delta over X, "
          "the Theorem-3 bound for W_Q and W_K is at most eta times the one for W_V and W_O.",
          "section 3.2.3, appendix B"),
    Claim("thm4.lower_bound", "Theorem 4: 'lower bound' for W_V and W_O",
          "The theorem says the Q/K upper bound is at most an eta-fraction of the 'sensitivity lower bound' "
          "for W_V and W_O; what does the proof compare, and does the exact-sensitivity version hold?",
          "section 3.2.3, appendix B"),
    Claim("thm4.threshold", "Theorem 4: parameter regions of Eq. (7)",
          "a > 0 is required; K < 1/e for W_{-1}(-K) to exist; the log(2(n-1)) term of the max; the "
          "range of delta (stated as (0, 1/2) and as (0, 1)).", "section 3.2.3, appendix B"),
    Claim("thm4.example", "Worked example after Theorem 4",
          "n = 197, d = 768, delta = 0.1, alpha = 0.5, beta = 2, tau = 2, eta = 1/2: t = 0.188, chi = 6.15, "
          "a = 0.0293, K = 6.8e-6, -W_{-1}(-K) = 10.97, log 2(n-1) = 6.0, c^2 >= 2452, c >= 49.51.",
          "section 3.2.3"),
    Claim("thm5.v_rowspace", "Theorem 5: perturbing W_V",
          "For any dW_V, the change of token row i is b_i^T dW_V W_O (exact, F is linear in W_V) and lies in "
          "row(W_O).", "section 3.2.4, appendix C"),
    Claim("thm5.o_pinv", "Theorem 5: perturbing W_O",
          "If b_i^T W_V != 0, dW_O = (b_i^T W_V)^+ dy realises any target change dy of token row i.",
          "section 3.2.4, appendix C"),
    Claim("thm5.multihead", "Theorem 5 in multi-head attention",
          "The W_V restriction is to row(W_O) for one head's W_O^h; what does it become for the whole layer?",
          "section 3.2.4"),
    Claim("rescale.vo", "V/O rescaling ('Large O' / 'Large V')",
          "F(X, W_Q, W_K, W_V / s, s W_O) = F(X, W_Q, W_K, W_V, W_O) for s > 0; the V sensitivity and Eq. (5) "
          "scale by s, the O sensitivity and Eq. (6) by 1/s.", "section 3.2.4 and the experiments of figure 1"),
    Claim("real.minilm.bounds", "Theorem 3 on real pretrained weights",
          "On every layer and every head of all-MiniLM-L6-v2, with that layer's real hidden states as X "
          "(rows not unit-norm) and the biases dropped as in Eq. (1), the exact sensitivities obey Eqs. (3)-(6) "
          "(per head) and the multi-head transfer with the corrected O bound (per layer).",
          "section 3.2.3"),
    Claim("real.minilm.hierarchy", "The sensitivity hierarchy on real pretrained weights",
          "'In attention layers with comparable projection norms, the sensitivity hierarchy is "
          "W_O >= W_V >> W_Q ~ W_K' (read here as sens_O >= sens_V, min(sens_V, sens_O) >= 10 max(sens_Q, "
          "sens_K), and sens_Q, sens_K within a factor 2), per layer of all-MiniLM-L6-v2 whose four spectral "
          "norms lie within a factor 2 of each other.",
          "section 3.2 (TL;DR)"),
]

CLAIMS_BY_ID = {claim.id: claim for claim in CLAIMS}
