"""The paper's 1D-signal world (docs/method.md §3): signal families, the MLP, pretraining, rollouts."""
