"""A network as a neuron graph from its weights: trace the module or exported program, fold BatchNorm, and turn
each Linear/Conv into weighted edges (|W|, or a kernel-slice norm). No database involved."""
