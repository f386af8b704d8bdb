"""Activation graphs: record the units of a network over a data set, correlate them (Pearson or Spearman), and
keep the strongest pairs as edges. No database involved."""
