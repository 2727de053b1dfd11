// Guichet inbox: keyboard triage (j/k, Enter, a, d, ?) and live updates by server-sent events.
(function () {
  "use strict";
  var csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";

  function rows() { return Array.prototype.slice.call(document.querySelectorAll("tr.contact")); }
  function current() { return document.querySelector("tr.contact.selected"); }

  function select(row) {
    rows().forEach(function (r) { r.classList.remove("selected"); r.removeAttribute("aria-selected"); });
    if (row) {
      row.classList.add("selected");
      row.setAttribute("aria-selected", "true");
      row.focus();
      sessionStorage.setItem("guichet-selected", row.dataset.id);
    }
  }

  function move(step) {
    var all = rows();
    if (!all.length) { return; }
    var index = all.indexOf(current());
    var next = index < 0 ? 0 : Math.min(all.length - 1, Math.max(0, index + step));
    select(all[next]);
  }

  function post(path, fields) {
    var body = new URLSearchParams(fields);
    return fetch(path, {
      method: "POST", body: body, credentials: "same-origin",
      headers: { "X-CSRF-Token": csrf, "HX-Request": "true" }
    });
  }

  function refresh() {
    var list = document.getElementById("rows");
    if (list && window.htmx) {
      window.htmx.ajax("GET", window.location.pathname + window.location.search, { target: "#rows" });
    }
  }

  function contactId() {
    var row = current();
    if (row) { return row.dataset.id; }
    var view = document.querySelector("[data-contact]");
    return view ? view.dataset.contact : null;
  }

  document.addEventListener("keydown", function (event) {
    var target = event.target;
    if (event.ctrlKey || event.metaKey || event.altKey) { return; }
    if (target && (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT|BUTTON)$/.test(target.tagName))) { return; }
    var id = contactId();
    if (event.key === "j") { move(1); event.preventDefault(); }
    else if (event.key === "k") { move(-1); event.preventDefault(); }
    else if (event.key === "Enter" && current()) {
      window.location.href = "/inbox/contacts/" + current().dataset.id; event.preventDefault();
    }
    else if (event.key === "a" && id) {
      post("/inbox/contacts/" + id + "/assign", { user: "me" }).then(function () {
        if (document.getElementById("rows")) { refresh(); } else { window.location.reload(); }
      });
      event.preventDefault();
    }
    else if (event.key === "d" && id) {
      post("/inbox/contacts/" + id + "/done", { done: "1" }).then(function () {
        if (document.getElementById("rows")) { refresh(); } else { window.location.href = "/inbox"; }
      });
      event.preventDefault();
    }
    else if (event.key === "?") {
      var help = document.getElementById("help");
      if (help && help.showModal) { help.showModal(); }
      event.preventDefault();
    }
  });

  document.addEventListener("htmx:afterSwap", function () {
    var remembered = sessionStorage.getItem("guichet-selected");
    var row = remembered && document.querySelector('tr.contact[data-id="' + remembered + '"]');
    if (row) { row.classList.add("selected"); }
  });

  var list = document.getElementById("rows");
  if (list && list.dataset.live && window.EventSource) {
    var pending = null;
    var source = new EventSource(list.dataset.live);
    var later = function () {
      if (pending) { return; }
      // A burst of changes (a batch of mail) refreshes the list once.
      pending = setTimeout(function () { pending = null; refresh(); }, 300);
    };
    source.addEventListener("contact", later);
    source.addEventListener("change", later);
  }
})();
