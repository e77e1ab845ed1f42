// Which views a person can see. While tokens stream, the page redraws only the views on screen.
// Why: rebuilding the step-by-step table and the all-heads grid took most of the page's main
// thread during a generation, below the fold or not, and with two wasm threads on two cores that
// time came out of the decode (docs/PERFORMANCE.md, "2026-11-27, morning"). A view that comes on
// screen mid-run is redrawn at once, and every view is redrawn when the run ends.

export class OnScreen {
  /** `shown()`: called when a watched view comes on screen. */
  constructor(shown) {
    this.seen = new Map(); // view → on screen; a view not reported yet counts as on screen
    this.observer = new IntersectionObserver((entries) => {
      let appeared = false;
      for (const e of entries) {
        appeared ||= e.isIntersecting && this.seen.get(e.target) === false;
        this.seen.set(e.target, e.isIntersecting);
      }
      if (appeared) shown();
    });
  }

  watch(...views) {
    for (const view of views) this.observer.observe(view);
  }

  /** Whether `view` is on screen (or not known to be off it). */
  has(view) {
    return this.seen.get(view) !== false;
  }
}
