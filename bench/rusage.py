#!/usr/bin/env python3
# Run a command, pass its stdout/stderr through, and print its peak RSS (KiB, from wait4's rusage)
# as the last line on fd 3 ("maxrss <KiB> status <code>"). Used by the benchmarks for kindling and QEMU alike.
import os, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
_, status, ru = os.wait4(pid, 0)
code = os.waitstatus_to_exitcode(status)
try:
    os.write(3, f"maxrss {ru.ru_maxrss} status {code}\n".encode())
except OSError:
    pass
sys.exit(code if code >= 0 else 128 - code)
