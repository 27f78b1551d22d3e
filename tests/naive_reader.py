"""Run as a script: load files the naive way (plain pickle.load or torch.load), one forked child
per file, under a memory cap and a time limit; write what happened to each as JSON.

    python naive_reader.py CASES.json RESULTS.json

CASES.json: [{"label", "how" (pickle | torch | gadget), "file", "project"}]. For each case the
result is {"status": "exit" | "signal" | "timeout", "code": int, "stdout": str}; exit code 3 is
a MemoryError. Used by tests/test_adversarial.py to prove each payload live before the plugin is
shown to refuse it: torch is imported once, then each load runs in its own fork.
"""

import json
import os
import pickle
import resource
import signal
import sys
import time
import warnings

warnings.simplefilter("ignore")
import torch  # noqa: E402  (imported before the cap: its own mappings are large)

TIMEOUT = float(os.environ.get("NAIVE_TIMEOUT", "6"))


def naive_load(how: str, path: str) -> None:
    if how == "torch":
        torch.load(path, weights_only=False)
        return
    with open(path, "rb") as f:
        obj = pickle.load(f)
    if how == "gadget":
        obj["any key"]  # what the output comparison does to a defaultdict
    print(
        repr(obj)[:200],
        f"flags={getattr(obj, 'flags', None)}",
        f"itemsize={getattr(obj, 'itemsize', None)}",
    )


def child(case: dict, out_path: str) -> None:
    fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    if case.get("project"):
        sys.path.insert(0, case["project"])
    with open("/proc/self/status") as status:
        vm = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
    cap = vm + (2 << 30)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    code = 0
    try:
        naive_load(case["how"], case["file"])
    except MemoryError:
        code = 3
    except BaseException as exc:  # the payload may run before the reader fails on what follows
        print(type(exc).__name__, str(exc)[:200])
        code = 1
    sys.stdout.flush()
    os._exit(code)


def main() -> None:
    cases = json.load(open(sys.argv[1]))
    results = {}
    for i, case in enumerate(cases):
        out_path = f"{sys.argv[2]}.{i}.out"
        pid = os.fork()
        if pid == 0:
            child(case, out_path)
        deadline = time.monotonic() + TIMEOUT
        status = None
        while time.monotonic() < deadline:
            done, code = os.waitpid(pid, os.WNOHANG)
            if done:
                status = code
                break
            time.sleep(0.02)
        else:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        with open(out_path) as f:
            stdout = f.read()
        if status is None:
            result = {"status": "timeout", "code": -1}
        elif os.WIFSIGNALED(status):
            result = {"status": "signal", "code": os.WTERMSIG(status)}
        else:
            result = {"status": "exit", "code": os.WEXITSTATUS(status)}
        results[case["label"]] = {**result, "stdout": stdout}
    json.dump(results, open(sys.argv[2], "w"))


if __name__ == "__main__":
    main()
