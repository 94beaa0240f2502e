"""A stand-in training script: progress on stdout, checkpoints on stderr, epochs from the environment."""

import os
import sys
import time

for epoch in range(int(os.environ.get("EPOCHS", "3"))):
    print(f"epoch {epoch} loss {1 / (epoch + 1):.2f}", flush=True)
    print(f"checkpoint {epoch} written", file=sys.stderr, flush=True)
    time.sleep(0.2)
