"""scripts/bench: medians of minidocker beside its peers, run in one invocation."""
