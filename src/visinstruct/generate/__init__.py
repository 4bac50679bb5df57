"""The generate stage: tasks registry, prompt packs, units, ledger, limits, runner, reply parsing."""
