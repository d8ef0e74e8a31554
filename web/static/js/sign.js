// The signing page: choose a typed or a drawn signature, preview the typed one in the
// handwriting font it is stamped in, and draw on a canvas with a mouse, a finger or a pen
// (pointer events; sharp on high-density screens). Without JavaScript the page signs with the
// typed name.
(function () {
  "use strict";

  var form = document.querySelector("[data-sign-form]");
  if (!form) {
    return;
  }
  var kinds = form.querySelector("[data-signature-kinds]");
  var panels = form.querySelectorAll("[data-signature-panel]");
  var textInput = form.querySelector("#signature-text");
  var preview = form.querySelector("[data-typed-preview]");
  var canvas = form.querySelector("[data-signature-canvas]");
  var pngField = form.querySelector("[data-signature-png]");
  var ratioField = form.querySelector("[data-signature-ratio]");
  var zoneField = form.querySelector("[data-time-zone]");
  var clearButton = form.querySelector("[data-signature-clear]");
  var drawnError = form.querySelector("[data-drawn-error]");
  var context = canvas.getContext("2d");
  var INK = "#16226e";  // the ink of typed signatures, so both kinds look alike on paper
  var strokes = [];     // each stroke is a list of [x, y, width] in CSS pixels
  var current = null;
  var pixelRatio = 1;   // canvas pixels per CSS pixel: the server measures the drawing in CSS pixels

  // The date of signing is the signer's own calendar date: send the browser's time zone.
  try {
    zoneField.value = Intl.DateTimeFormat().resolvedOptions().timeZone || "";
  } catch (error) {
    zoneField.value = "";
  }

  kinds.hidden = false;

  function kind() {
    var chosen = form.querySelector("input[name=signature_type]:checked");
    return chosen ? chosen.value : "typed";
  }

  function showKind() {
    panels.forEach(function (panel) {
      panel.hidden = panel.getAttribute("data-signature-panel") !== kind();
    });
    if (kind() === "drawn") {
      resize();
    }
  }

  function dot(point) {
    context.beginPath();
    context.arc(point[0], point[1], point[2] / 2, 0, Math.PI * 2);
    context.fill();
  }

  function segment(from, to) {
    context.lineWidth = to[2];
    context.beginPath();
    context.moveTo(from[0], from[1]);
    context.lineTo(to[0], to[1]);
    context.stroke();
  }

  function redraw() {
    context.clearRect(0, 0, canvas.width, canvas.height);
    context.strokeStyle = INK;
    context.fillStyle = INK;
    context.lineCap = "round";
    context.lineJoin = "round";
    strokes.forEach(function (stroke) {
      dot(stroke[0]);
      for (var i = 1; i < stroke.length; i += 1) {
        segment(stroke[i - 1], stroke[i]);
      }
    });
  }

  function resize() {
    // Draw at the screen's pixel density (at most 2x, which keeps the PNG small).
    var ratio = Math.min(window.devicePixelRatio || 1, 2);
    var box = canvas.getBoundingClientRect();
    if (!box.width) {
      return;
    }
    pixelRatio = ratio;
    canvas.width = Math.round(box.width * ratio);
    canvas.height = Math.round(box.height * ratio);
    context.setTransform(ratio, 0, 0, ratio, 0, 0);
    redraw();
  }

  function pointOf(event) {
    var box = canvas.getBoundingClientRect();
    // A pen reports its pressure; a mouse or a finger draws a steady line.
    var pressure = event.pointerType === "pen" && event.pressure ? event.pressure : 0.5;
    return [event.clientX - box.left, event.clientY - box.top, 1.5 + pressure * 3];
  }

  canvas.addEventListener("pointerdown", function (event) {
    if (event.pointerType === "mouse" && event.button !== 0) {
      return;
    }
    event.preventDefault();
    canvas.setPointerCapture(event.pointerId);
    current = [pointOf(event)];
    strokes.push(current);
    context.fillStyle = INK;
    dot(current[0]);
    drawnError.hidden = true;
  });

  canvas.addEventListener("pointermove", function (event) {
    if (!current) {
      return;
    }
    event.preventDefault();
    var events = event.getCoalescedEvents ? event.getCoalescedEvents() : [];
    if (!events.length) {
      events = [event];
    }
    context.strokeStyle = INK;
    events.forEach(function (each) {
      var point = pointOf(each);
      segment(current[current.length - 1], point);
      current.push(point);
    });
  });

  function endStroke() {
    current = null;
  }
  canvas.addEventListener("pointerup", endStroke);
  canvas.addEventListener("pointercancel", endStroke);
  canvas.addEventListener("lostpointercapture", endStroke);

  clearButton.addEventListener("click", function () {
    strokes = [];
    pngField.value = "";
    redraw();
  });

  textInput.addEventListener("input", function () {
    preview.textContent = textInput.value;
  });

  form.querySelectorAll("input[name=signature_type]").forEach(function (radio) {
    radio.addEventListener("change", showKind);
  });

  window.addEventListener("resize", function () {
    if (kind() === "drawn") {
      resize();
    }
  });

  form.addEventListener("submit", function (event) {
    if (kind() !== "drawn") {
      pngField.value = "";
      return;
    }
    if (!strokes.length) {
      event.preventDefault();
      drawnError.hidden = false;
      canvas.scrollIntoView({ block: "center" });
      return;
    }
    pngField.value = canvas.toDataURL("image/png");
    ratioField.value = String(pixelRatio);
  });

  showKind();
})();
