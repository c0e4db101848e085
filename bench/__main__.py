"""`python -m bench` (`make bench`); BENCH_SCALE=0.1 for a quick run, BENCH_ONLY=a,b to pick."""

from bench.run import main

main()
