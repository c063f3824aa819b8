"""What the tests, the benchmarks and the scripts share: child processes, private brokers and
displays, bus watchers, sample messages, and small publisher programs (``python -m harness.feed``).
Not part of the product: nothing under common/, services/ or sim/ imports it."""
