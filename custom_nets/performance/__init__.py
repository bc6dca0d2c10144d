"""Measuring and using the hardware: device, threads, throughput, memory; fast inference; training timers."""
