"""ember's exact reference: a float64 forward pass per model family (numpy + gguf).

Ground truth for the fidelity fixtures in tests/fixtures/reference/. See forward.py.
"""
