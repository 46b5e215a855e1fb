"""pmp-bench: benchmark suite comparing bSQH with SGD, Adam and proximal baselines."""
