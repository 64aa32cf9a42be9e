"""Baselines RandOpt is compared with: evolution strategies and GRPO."""
