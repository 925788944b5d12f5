"""Summaries for run reports (demo, collect, bench): success counts and latency percentiles."""
from collections import Counter

import numpy as np


def percentile_ms(samples_ms, q):
    """Return the ``q``-th percentile (0..100) of ``samples_ms`` (ms), or None when empty."""
    if len(samples_ms) == 0:
        return None
    return float(np.percentile(np.asarray(samples_ms, dtype=np.float64), q))


def summarize_episodes(end_events):
    """Return episodes, successes, success_rate and outcome counts from ``end`` events."""
    n = len(end_events)
    successes = sum(1 for e in end_events if e.get('success'))
    return {'episodes': n, 'successes': successes,
            'success_rate': successes / n if n else 0.0,
            'outcomes': dict(Counter(e.get('outcome', 'unknown') for e in end_events))}


def latency_summary(samples_ms):
    """Return p50/p99/max/mean frame-to-command latency (ms) and the sample count."""
    return {'frame_to_command_ms_p50': percentile_ms(samples_ms, 50),
            'frame_to_command_ms_p99': percentile_ms(samples_ms, 99),
            'frame_to_command_ms_max': float(np.max(samples_ms)) if len(samples_ms) else None,
            'latency_samples': len(samples_ms)}
