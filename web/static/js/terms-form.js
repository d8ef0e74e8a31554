// Conveniences for the terms form. The form works without them: the list buttons submit the
// form and the server adds or removes a box, and empty derived fields are computed on saving.
//  - Lists of dates or texts: "Add another" and "Remove" act at once, without a round trip.
//  - Derived fields (a date the day after another, a period's end...) follow the fields they
//    come from as the user types, until the user types a value of their own.
//  - After a failed save, the summary of problems takes the focus.
(function () {
  "use strict";

  var form = document.querySelector("[data-terms-form]");
  if (!form) {
    return;
  }

  // --- the summary of problems --------------------------------------------------------------
  var summary = document.getElementById("error-summary");
  if (summary && !document.querySelector("[autofocus]")) {
    summary.focus();
  }

  // --- lists (of dates or of texts) ---------------------------------------------------------
  function renumber(list) {
    var key = list.getAttribute("data-date-list");
    var noun = list.getAttribute("data-list-noun") || "Date";
    var items = list.querySelectorAll("[data-date-list-items] > li");
    items.forEach(function (item, index) {
      var number = index + 1;
      var id = "term-" + key + "-" + number;
      var label = item.querySelector("label");
      var input = item.querySelector("input");
      var remove = item.querySelector("[data-date-list-remove]");
      label.setAttribute("for", id);
      label.textContent = noun + " " + number;
      input.id = id;
      remove.value = key + ":" + number;
      remove.querySelector(".visually-hidden").textContent = " " + noun.toLowerCase() + " " +
        number;
    });
    var max = parseInt(list.getAttribute("data-max-items"), 10) || 50;
    list.querySelector("[data-date-list-add]").disabled = items.length >= max;
    return items;
  }

  function addBox(list) {
    var template = list.querySelector("template[data-date-list-template]");
    var items = list.querySelector("[data-date-list-items]");
    items.appendChild(template.content.firstElementChild.cloneNode(true));
    var all = renumber(list);
    return all[all.length - 1].querySelector("input");
  }

  form.addEventListener("click", function (event) {
    var button = event.target.closest("[data-date-list-add], [data-date-list-remove]");
    if (!button) {
      return;
    }
    var list = button.closest("[data-date-list]");
    if (!list) {
      return;
    }
    event.preventDefault();
    if (button.hasAttribute("data-date-list-add")) {
      addBox(list).focus();
      return;
    }
    var item = button.closest("li");
    var next = item.nextElementSibling || item.previousElementSibling;
    item.remove();
    var items = renumber(list);
    if (items.length === 0) {
      addBox(list).focus();
    } else {
      (next || items[0]).querySelector("input").focus();
    }
  });

  // --- derived fields -------------------------------------------------------------------------
  function parseDate(text) {
    var match = /^(\d{4})-(\d{2})-(\d{2})$/.exec(text || "");
    if (!match) {
      return null;
    }
    var date = new Date(Date.UTC(+match[1], +match[2] - 1, +match[3]));
    return date.getUTCDate() === +match[3] ? date : null;
  }

  function formatDate(date) {
    return date.toISOString().slice(0, 10);
  }

  function parseWhole(text) {
    return /^\s*\d+\s*$/.test(text || "") ? parseInt(text, 10) : null;
  }

  var derivations = {
    next_day: function (day) {
      day = parseDate(day);
      return day ? formatDate(new Date(day.getTime() + 86400000)) : "";
    },
    add_months: function (day, months) {
      day = parseDate(day);
      months = parseWhole(months);
      if (!day || months === null) {
        return "";
      }
      var index = day.getUTCMonth() + months;
      var year = day.getUTCFullYear() + Math.floor(index / 12);
      var month = index % 12;
      var last = new Date(Date.UTC(year, month + 1, 0)).getUTCDate();
      return formatDate(new Date(Date.UTC(year, month, Math.min(day.getUTCDate(), last))));
    },
    whole_years_between: function (start, end) {
      start = parseDate(start);
      end = parseDate(end);
      if (!start || !end) {
        return "";
      }
      var years = Math.round((end - start) / 86400000 / 365.2425);
      return years > 0 ? String(years) : "";
    }
  };

  form.querySelectorAll("[data-derive]").forEach(function (input) {
    var derive = derivations[input.getAttribute("data-derive")];
    var sources = input.getAttribute("data-derive-from").split(" ").map(function (key) {
      return form.elements.namedItem(key);
    });
    if (!derive || sources.some(function (source) { return !source; })) {
      return;
    }
    function computed() {
      return derive.apply(null, sources.map(function (source) { return source.value; }));
    }
    // A field follows its sources while it is empty or still holds the computed value.
    var following = input.value === "" || input.value === computed();
    sources.forEach(function (source) {
      source.addEventListener("input", function () {
        if (following) {
          input.value = computed();
        }
      });
    });
    input.addEventListener("input", function () {
      following = input.value === "" || input.value === computed();
    });
  });

  // Say that the form's conveniences are in place (tests wait for this before clicking).
  form.setAttribute("data-enhanced", "");
})();
