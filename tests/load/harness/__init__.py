"""Load test of one e2-micro: the real service under the VM's CPU and memory limits.

    .venv/bin/python scripts/loadtest.py --mode short            # CI, under 2 minutes
    .venv/bin/python scripts/loadtest.py --mode full --plots docs/img

What it does, all on loopback and all bounded in time and request count:

1. Makes a corpus of source images once (cached under /var/cache/img2pdf-tests,
   or the temp dir): photo-like JPEGs of 1-12 MP, screenshot/photo/alpha PNGs,
   and bad inputs (HTML, an oversized body, a pixel bomb, a closed port).
2. Serves them from a separate process with 50-200 ms of latency per request.
3. Starts `scripts/entrypoint.sh prod` inside a fresh cgroup limited like an
   e2-micro (0.5 CPU: quota 50000 us per 100000 us; 1 GiB; no swap), with the
   host's backend (tests/support/cgroups.py): `systemd-run --scope` on a
   systemd + cgroup v2 host, a raw v2 group, or v1 cpu/memory groups. The
   service's first process is inside before it execs, so gunicorn and every
   worker it forks are inside before they exist.
4. Offers an open-loop Poisson arrival rate, step by step, from an asyncio +
   httpx client (timeout 30 s, the load balancer's backend timeout), and
   records per step: throughput, latency percentiles, status mix, client-side
   failures (timeouts, resets), CPU used and throttled, peak memory.
5. Checks for OOM kills (v1 memory.oom_control, v2 memory.events, the log's
   "was sent SIGKILL"),
   removes the cgroups, and writes a JSON report (+ markdown tables, plots).

Exit status: 0 when every answer was one the contract allows for its input
(good images: 200 or 503; bad ones: their 4xx/502 or 503), no request timed
out or lost its connection, and nothing was OOM-killed; 1 otherwise.
"""
