"""Where money goes: the ledger, the supply-chain split, statements, their exports and checkpoints."""
