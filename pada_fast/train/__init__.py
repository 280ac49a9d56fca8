"""The training loop (:mod:`.trainer`), its non-finite guard (:mod:`.faults`), logging, signal
handling and torch.distributed set-up (:mod:`.distributed`)."""
