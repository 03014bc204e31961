"""The inner schedule's warm-up step count (SEAL's ARC TTT: HF `warmup_steps=11` then cosine)."""
import math

import jax.numpy as jnp
import numpy as np
import pytest

from seal_jax.engine.inner import InnerConfig, lr_multiplier


@pytest.mark.parametrize("total", [5, 11, 30, 120])
def test_warmup_steps_then_cosine_matches_hf_closed_form(total):
    """HF get_cosine_schedule_with_warmup: t/w for t < w, then 0.5 (1 + cos(pi (t - w) / (total - w)))."""
    icfg = InnerConfig(schedule="cosine", warmup_steps=11, warmup_ratio=0.5)  # the count overrides the ratio
    w = 11
    want = [t / w if t < w else 0.5 * (1 + math.cos(math.pi * (t - w) / max(1, total - w))) for t in range(total)]
    got = [float(lr_multiplier(icfg, jnp.int32(t), jnp.int32(total))) for t in range(total)]
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert got[0] == 0.0  # HF's first update uses lr 0


def test_warmup_ratio_still_used_without_a_count():
    icfg = InnerConfig(schedule="linear", warmup_ratio=0.25)
    got = [float(lr_multiplier(icfg, jnp.int32(t), jnp.int32(8))) for t in range(8)]
    np.testing.assert_allclose(got, [0.0, 0.5, 1.0, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6], atol=1e-6)


def test_negative_warmup_steps_rejected():
    with pytest.raises(ValueError, match="warmup_steps"):
        InnerConfig(warmup_steps=-1)
