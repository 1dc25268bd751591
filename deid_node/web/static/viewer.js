// Window/level by dragging (the server applies it), presets, zoom/fit, frames and cine.
(function () {
  "use strict";
  const root = document.getElementById("viewer");
  if (!root) return;
  const sop = root.dataset.sop;
  const frames = parseInt(root.dataset.frames, 10);
  const image = document.getElementById("image");
  const stage = document.getElementById("stage");
  const label = document.getElementById("wl");
  const slider = document.getElementById("frame");
  const presets = JSON.parse(root.dataset.presets || "[]");
  let frame = 0, center = null, width = null, fit = true, timer = null, pending = false;

  function url() {
    let u = "/api/instances/" + sop + "/frames/" + frame + ".png";
    if (center !== null) u += "?window_center=" + center.toFixed(1) + "&window_width=" + width.toFixed(1);
    return u;
  }
  function show() {
    if (pending) return;  // one request at a time; the latest settings win
    pending = true;
    const next = new Image();
    const wanted = url();
    next.onload = next.onerror = function () {
      image.src = next.src; pending = false;
      if (wanted !== url()) show();
    };
    next.src = wanted;
    label.textContent = center === null ? "" : "C " + Math.round(center) + " / W " + Math.round(width);
  }
  function layout() { image.classList.toggle("fit", fit); }

  let drag = null;
  stage.addEventListener("mousedown", function (e) {
    if (center === null) {
      const p = presets[0] || [128, 256];
      center = p[0]; width = p[1];
    }
    drag = { x: e.clientX, y: e.clientY, c: center, w: width };
    e.preventDefault();
  });
  window.addEventListener("mousemove", function (e) {
    if (!drag) return;
    width = Math.max(1, drag.w + (e.clientX - drag.x) * 4);
    center = drag.c + (e.clientY - drag.y) * 2;
    show();
  });
  window.addEventListener("mouseup", function () { drag = null; });
  document.getElementById("preset").addEventListener("change", function (e) {
    if (!e.target.value) { center = width = null; } else {
      const p = e.target.value.split(",").map(Number); center = p[0]; width = p[1];
    }
    show();
  });
  document.getElementById("fit").addEventListener("click", function () { fit = true; layout(); });
  document.getElementById("zoom").addEventListener("click", function () { fit = false; layout(); });
  if (slider) slider.addEventListener("input", function () { frame = parseInt(slider.value, 10); show(); });
  const play = document.getElementById("play");
  if (play) play.addEventListener("click", function () {
    if (timer) { clearInterval(timer); timer = null; play.textContent = "play"; return; }
    play.textContent = "stop";
    timer = setInterval(function () {
      frame = (frame + 1) % frames; slider.value = frame; show();
    }, 100);
  });
  // The mouse wheel scrolls through the series, as radiology viewers do.
  stage.addEventListener("wheel", function (e) {
    const link = document.getElementById(e.deltaY > 0 ? "next-instance" : "prev-instance");
    if (link && !link.classList.contains("disabled")) { e.preventDefault(); window.location = link.href; }
  }, { passive: false });
  layout();
})();
