"""Times beacontools' parse_packet over the frames file the Rust benchmark writes (one hex
advertisement per line) and prints advertisements per second (median of 5 runs)."""

import statistics
import sys
import time

from beacontools import parse_packet

frames = [bytes.fromhex(line.strip()) for line in open(sys.argv[1]) if line.strip()]
rates = []
for _ in range(5):
    start = time.perf_counter()
    for frame in frames:
        try:
            parse_packet(frame)
        except Exception:  # malformed frames: beacontools may raise where we report
            pass
    rates.append(len(frames) / (time.perf_counter() - start))
print(f"{statistics.median(rates):.0f}")
