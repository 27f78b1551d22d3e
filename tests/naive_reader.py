"""Run as a script: load FILE the naive way (plain pickle or torch.load), under a memory cap.

    python naive_reader.py pickle|torch|gadget FILE [PROJECT_DIR]

Exit 0 when the load returned; a signal, MemoryError (exit 3) or a timeout (the caller's) are
the other outcomes. Used by tests/test_adversarial.py to prove each payload live.
"""

import pickle
import resource
import sys
import warnings

warnings.simplefilter("ignore")
how, path = sys.argv[1], sys.argv[2]
if len(sys.argv) > 3:
    sys.path.insert(0, sys.argv[3])
import torch  # noqa: E402  (imported before the cap: its own mappings are large)

with open("/proc/self/status") as status:
    vm = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
cap = vm + (2 << 30)
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
try:
    if how == "torch":
        torch.load(path, weights_only=False)
    else:
        with open(path, "rb") as f:
            obj = pickle.load(f)
        if how == "gadget":
            obj["any key"]
        else:
            print(repr(obj)[:200], f"flags={getattr(obj, 'flags', None)}")
except MemoryError:
    sys.exit(3)
except Exception as exc:  # the payload may run before the reader fails on what follows
    print(type(exc).__name__, exc)
    sys.exit(1)
