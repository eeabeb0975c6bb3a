"""Benchmarks for Bastion (`make bench`, i.e. ``python -m bench.run``); not part of `make test`.

- ``run``: the full benchmark and its summary table (results saved to ``bench/results/``);
- ``bare_app`` / ``bare_gunicorn_conf``: the bare Flask reference under the same server layout;
- ``servers``: starting and stopping `bastion serve`, the bare app and a private Redis;
- ``client``: a small HTTPS client (sign-in, CSRF token, cookies);
- ``wrk``: running Debian's wrk and parsing its output;
- ``flood``: the login-flood generator and the paced signed-in latency probe (issue 3);
- ``memory``: RSS/USS per gunicorn worker from /proc;
- ``redis_count``: Redis commands and round trips per request (INFO and MONITOR);
- ``hash_params``: argon2id verify timings (pre-existing; ``run`` calls its ``measure``);
- ``switches``: context switches per request by cause (where the GIL changes hands), with
  Linux perf; run on its own, not by ``run``.

Every load targets 127.0.0.1 (or 127.0.0.x source addresses for the flood) and is bounded
in time.
"""
