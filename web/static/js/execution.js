// The letter page's signing links: a "Copy" button beside each link shown after sending.
// Without JavaScript (or without clipboard access) the link stays in a read-only box to select.
// A refused paper upload's message is brought into view and focused.
(function () {
  "use strict";

  function copied(button) {
    var label = button.firstChild;
    var before = label.nodeValue;
    label.nodeValue = "Copied";
    window.setTimeout(function () { label.nodeValue = before; }, 2000);
  }

  document.querySelectorAll("[data-copy]").forEach(function (button) {
    var input = document.getElementById(button.getAttribute("data-copy"));
    if (!input) {
      return;
    }
    button.hidden = false;
    button.addEventListener("click", function () {
      input.focus();
      input.select();
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(input.value).then(function () { copied(button); },
          function () { document.execCommand("copy"); copied(button); });
      } else {
        document.execCommand("copy");
        copied(button);
      }
    });
  });

  document.querySelectorAll("[data-signing-link]").forEach(function (input) {
    input.addEventListener("focus", function () { input.select(); });
  });

  // A refused upload or confirmation: its message sits by the control that was used; bring it
  // into view and give it the focus, so it is read where the person is looking.
  var refusal = document.querySelector("[data-focus-on-load]");
  if (refusal) {
    refusal.scrollIntoView({ block: "center" });
    refusal.focus({ preventScroll: true });
  }
})();
