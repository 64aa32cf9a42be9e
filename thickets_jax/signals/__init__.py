"""The paper's 1D-signal world (METHOD.md §3): signal families, the MLP, pretraining, rollouts."""
