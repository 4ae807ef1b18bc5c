"""LaPerm across processes on gloo: DDP, DTensor, FSDP2 with distributed checkpoints."""
