"""The memory budget, in process: masks of extreme shapes, the session budget, the kept-object
cap, and concurrent events of one session (issue 18). Peak RSS is the kernel's VmHWM, reset
before each measurement."""

import threading
from pathlib import Path

import numpy as np
import pytest

from mobilesam_web.data.rle import crop_to_coco_rle, rle_to_crop
from mobilesam_web.data.upscale import TAPS, mask_crop_from_low_res, mask_from_low_res
from mobilesam_web.ui import segment_actions as actions
from mobilesam_web.ui import segment_session as seg
from mobilesam_web.ui import segment_view as segview
from mobilesam_web.ui.budget import SessionBudget
from mobilesam_web.ui.errors import UserError


def peak_growth(fn):
    """(result of fn(), growth of this process' peak RSS in bytes while it ran)."""
    status = Path("/proc/self/status")

    def field(name):
        line = next(x for x in status.read_text().splitlines() if x.startswith(name + ":"))
        return int(line.split()[1]) * 1024

    Path("/proc/self/clear_refs").write_text("5")
    start = field("VmRSS")
    out = fn()
    return out, field("VmHWM") - start


def test_mask_of_a_one_pixel_high_400000_wide_image_is_cheap():
    """The 855-byte PNG of the issue: a 1 x 400000 image. Its mask used to need dense
    (400000 x 1024) float64 resize matrices (+3.9 GB); now a few MB."""
    low = np.full((256, 256), -5.0, np.float32)
    low[0, 40:200] = 5.0
    crop, growth = peak_growth(lambda: mask_crop_from_low_res(low, (1, 1024), (1, 400000)))
    assert crop is not None and crop.crop.shape[0] == 1 and 0 < crop.area < 400000
    assert growth < 100 << 20, f"peak RSS grew by {growth / 2**20:.0f} MB"
    full = mask_from_low_res(low, (1, 1024), (1, 400000))
    assert full.sum() == crop.area
    assert sum(t.nbytes for t in TAPS._items.values()) <= TAPS.max_bytes


def test_rle_round_trip_of_a_crop_never_needs_the_full_image():
    low = np.full((256, 256), -5.0, np.float32)
    low[100:110, 120:130] = 5.0
    crop = mask_crop_from_low_res(low, (768, 1024), (30000, 40000))  # a 1.2-gigapixel frame
    (rle, back), growth = peak_growth(lambda: (crop_to_coco_rle(crop), rle_to_crop(crop_to_coco_rle(crop))))
    assert back.bounds == crop.bounds and (back.crop == crop.crop).all()
    assert growth < 150 << 20, f"peak RSS grew by {growth / 2**20:.0f} MB"


class FakeSession:
    def __init__(self, n):
        self.n, self.released = n, False

    def nbytes(self):
        return 0 if self.released else self.n

    def release(self, everything=False):
        self.released = True


def test_session_budget_releases_the_least_recently_used():
    budget = SessionBudget(10 << 20)
    sessions = [FakeSession(3 << 20) for _ in range(5)]
    for s in sessions[:3]:
        budget.touch(s)
    budget.touch(sessions[0])  # used again: the most recent
    budget.touch(sessions[3])  # 12 MB > 10: the least recently used (1) goes
    assert [s.released for s in sessions[:4]] == [False, True, False, False]
    budget.touch(sessions[4])
    assert sessions[2].released and not sessions[0].released and not sessions[4].released
    assert budget.total_bytes() <= 10 << 20


def small_session(n_objects=0, max_objects=100):
    rng = np.random.default_rng(0)
    s = seg.SegmentSession(
        image=rng.integers(0, 255, (300, 400, 3), np.uint8),
        embedding=np.zeros((1, 256, 64, 64), np.float32),
        input_size=(768, 1024),
        max_objects=max_objects,
    )
    low = np.full((256, 256), -5.0, np.float32)
    low[50:80, 60:100] = 5.0
    s.objects = [seg.KeptObject(low, 0.9, seg.Prompts()) for _ in range(n_objects)]
    return s


def test_a_released_session_tells_its_visitor():
    from mobilesam_web.ui.budget import EVICTED
    from mobilesam_web.ui.segment_tab import _need_image

    s = small_session(2)
    before = s.nbytes()
    s.release()
    assert s.nbytes() < before / 10 and s.evicted
    with pytest.raises(Exception, match="dropped from the server's memory"):
        _need_image(s)
    assert "Upload it again" in EVICTED


def test_kept_objects_are_capped_and_their_masks_made_once():
    s = small_session(3, max_objects=3)
    s.result = seg.Result(s.objects[0].low_res[None], np.array([0.9], np.float32))
    with pytest.raises(UserError, match="at most 3 kept objects"):
        actions.keep_object(s)
    crops = s.object_crops()
    assert all(c is not None for c in crops)
    assert s.object_crops()[0] is crops[0]  # cached: a redraw makes no mask again
    segview.render(s)


def test_concurrent_events_of_one_session_apply_one_at_a_time(monkeypatch):
    """24 mixed keep/undo/clear/pick events at once on one session (the issue's race gave
    AttributeError 'NoneType' ... 'selected')."""
    from mobilesam_web.ui import segment_tab
    from mobilesam_web.ui.context import AppContext

    monkeypatch.setattr(segment_tab, "view", lambda ctx, s: ())
    ctx = AppContext(services=None, store=None, config=None, browser_available=False, budget=SessionBudget(1 << 30))
    s = small_session()
    errors = []

    def set_result(s):
        s.result = seg.Result(np.stack([s.image[:256, :256, 0].astype(np.float32) - 128] * 3), np.ones(3, np.float32))
        return s

    ops = [segment_tab.session_op(op) for op in (set_result, actions.keep_object, actions.undo, actions.clear)]

    def run(op):
        try:
            op(ctx, s)
        except Exception as exc:  # a UserFacingError ("add a point first") is fine; a crash is not
            if "Something went wrong" in str(exc):
                errors.append(exc)

    threads = [threading.Thread(target=run, args=(ops[i % 4],)) for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
