"use strict";
// The audible alert, generated with the Web Audio API (no sound file). A two-tone pattern
// repeats every 2.5 s while any critical alarm is unacknowledged. Browsers only start audio
// after a user gesture: until then the console shows a banner asking for one click
// (never silently off). Mute lasts for this browser session only and is always shown.
window.AlarmSound = (function () {
  let ctx = null, timer = null, wanted = false;
  const muted = () => sessionStorage.getItem("gw_muted") === "1";
  function ensure() {
    if (!ctx) {
      const AC = window.AudioContext || window.webkitAudioContext;
      if (!AC) return null;
      ctx = new AC();
    }
    return ctx;
  }
  function beep(at, freq, dur) {
    const osc = ctx.createOscillator(), gain = ctx.createGain();
    osc.type = "square"; osc.frequency.value = freq;
    gain.gain.setValueAtTime(0.0001, at);
    gain.gain.exponentialRampToValueAtTime(0.25, at + 0.02);
    gain.gain.exponentialRampToValueAtTime(0.0001, at + dur);
    osc.connect(gain).connect(ctx.destination);
    osc.start(at); osc.stop(at + dur + 0.02);
  }
  function pattern() {
    if (!wanted || muted() || !ctx || ctx.state !== "running") return;
    const t0 = ctx.currentTime + 0.01;
    for (let i = 0; i < 3; i++) { beep(t0 + i * 0.36, 988, 0.16); beep(t0 + i * 0.36 + 0.18, 740, 0.16); }
    window.__alarmSoundPlays = (window.__alarmSoundPlays || 0) + 1;
  }
  return {
    /** true when sound can play (context running) */
    ready() { return !!ctx && ctx.state === "running"; },
    /** call from a user gesture (login click, banner click) */
    unlock() { const c = ensure(); if (c && c.state !== "running") return c.resume(); return Promise.resolve(); },
    set(on) {
      wanted = on;
      if (on && !timer) { ensure(); pattern(); timer = setInterval(pattern, 2500); }
      if (!on && timer) { clearInterval(timer); timer = null; }
    },
    playing() { return wanted && !muted(); },
    muted,
    toggleMute() { sessionStorage.setItem("gw_muted", muted() ? "0" : "1"); },
  };
})();
