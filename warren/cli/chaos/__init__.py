"""``warren chaos``: a workload with confirms and manual acks, faults, and a total-queue check."""
