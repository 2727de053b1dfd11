/* Guichet web chat: the /chat page and the widget any site embeds with one script tag. */
(function () {
  "use strict";

  var script = document.currentScript ||
    document.querySelector('script[src$="/channels/chat/widget.js"]');
  if (!script || window.guichetChatLoaded) { return; }
  window.guichetChatLoaded = true;

  // The host page may be on another origin: Guichet is wherever this script came from.
  var base = new URL(script.src, location.href);
  var WS_URL = (base.protocol === "https:" ? "wss://" : "ws://") + base.host + "/channels/chat/ws";
  var UPLOAD_URL = base.origin + "/channels/chat/upload";
  var CSS_URL = base.origin + "/channels/chat/chat.css";
  var TOKEN_KEY = "guichet-chat-token:" + base.origin;

  var TEXTS = {
    fr: {
      title: "Messagerie Guichet Assistance",
      open: "Écrire à l'assistance",
      close: "Fermer la messagerie",
      intro: "Pour que nous retrouvions votre dossier, indiquez votre nom et votre e-mail ou votre téléphone (facultatif).",
      name: "Nom", email: "E-mail", phone: "Téléphone", start: "Commencer",
      message: "Votre message", send: "Envoyer",
      attach: "Joindre un fichier (photo, PDF)", photo: "Prendre une photo",
      you: "Vous", guichet: "Guichet",
      connecting: "Connexion…", online: "Connecté", offline: "Hors ligne, reconnexion…",
      sending: "envoi…", received: "reçu", failed: "non envoyé : ",
      retrying: "pas encore enregistré, nouvel essai dans {s} s",
      restart: "Cette conversation n'est plus reconnue ; commencez-en une nouvelle.",
      tooLarge: "fichier trop volumineux (maximum ", files: "Fichiers : ", log: "Messages"
    },
    en: {
      title: "Guichet Assistance chat",
      open: "Chat with assistance",
      close: "Close the chat",
      intro: "So that we can find your file, give your name and your email or phone (optional).",
      name: "Name", email: "Email", phone: "Phone", start: "Start",
      message: "Your message", send: "Send",
      attach: "Attach a file (photo, PDF)", photo: "Take a photo",
      you: "You", guichet: "Guichet",
      connecting: "Connecting…", online: "Connected", offline: "Offline, reconnecting…",
      sending: "sending…", received: "received", failed: "not sent: ",
      retrying: "not stored yet, trying again in {s} s",
      restart: "This conversation is no longer known; please start a new one.",
      tooLarge: "file too large (at most ", files: "Files: ", log: "Messages"
    }
  };

  function pickLanguage() {
    var prefs = navigator.languages && navigator.languages.length ?
      navigator.languages : [navigator.language || "fr"];
    for (var i = 0; i < prefs.length; i++) {
      var lang = String(prefs[i]).toLowerCase().slice(0, 2);
      if (lang === "fr" || lang === "en") { return lang; }
    }
    return "fr";
  }

  var lang = pickLanguage();
  var t = TEXTS[lang];

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) {
      if (key === "text") { node.textContent = attrs[key]; } else { node.setAttribute(key, attrs[key]); }
    });
    (children || []).forEach(function (child) { node.appendChild(child); });
    return node;
  }

  function newId() {
    var bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return Array.prototype.map.call(bytes, function (b) { return ("0" + b.toString(16)).slice(-2); }).join("");
  }

  if (!document.querySelector('link[href="' + CSS_URL + '"], link[href="/channels/chat/chat.css"]')) {
    document.head.appendChild(el("link", { rel: "stylesheet", href: CSS_URL }));
  }

  // ------------------------------------------------------------------ the panel
  var host = document.getElementById("guichet-chat");
  var pageMode = !!host && host.getAttribute("data-mode") === "page";
  if (pageMode) { document.documentElement.lang = lang; document.title = t.title; }
  var status = el("p", { "class": "gc-status", role: "status", text: t.connecting });
  var log = el("ol", { "class": "gc-log", role: "log", "aria-live": "polite", "aria-label": t.log });

  var nameInput = el("input", { id: "gc-name", name: "name", type: "text", autocomplete: "name", maxlength: "200" });
  var emailInput = el("input", { id: "gc-email", name: "email", type: "email", autocomplete: "email", maxlength: "320" });
  var phoneInput = el("input", { id: "gc-phone", name: "phone", type: "tel", autocomplete: "tel", maxlength: "40" });
  var prechat = el("form", { "class": "gc-prechat", hidden: "" }, [
    el("p", { text: t.intro }),
    el("label", { "for": "gc-name", text: t.name }), nameInput,
    el("label", { "for": "gc-email", text: t.email }), emailInput,
    el("label", { "for": "gc-phone", text: t.phone }), phoneInput,
    el("button", { type: "submit", "class": "gc-start", text: t.start })
  ]);

  var textarea = el("textarea", { id: "gc-text", name: "text", rows: "2", maxlength: "5000" });
  var fileInput = el("input", { id: "gc-file", type: "file", accept: "image/*,application/pdf", multiple: "" });
  var photoInput = el("input", { id: "gc-photo", type: "file", accept: "image/*,application/pdf", capture: "environment" });
  var composer = el("form", { "class": "gc-composer", hidden: "" }, [
    el("label", { "for": "gc-text", text: t.message }), textarea,
    el("div", { "class": "gc-actions" }, [
      fileInput, el("label", { "for": "gc-file", "class": "gc-file", text: t.attach }),
      photoInput, el("label", { "for": "gc-photo", "class": "gc-file gc-photo", text: t.photo }),
      el("button", { type: "submit", "class": "gc-send", text: t.send })
    ])
  ]);

  var panel = el("section", { id: "gc-panel", "class": "gc-panel", "aria-label": t.title }, [
    el("header", { "class": "gc-header" }, [el("h2", { text: t.title })]),
    status, log, prechat, composer
  ]);
  var launcher = null;
  if (pageMode) {
    panel.classList.add("gc-inline");
    host.appendChild(panel);
  } else {
    var root = el("div", { "class": "gc-root", lang: lang });
    launcher = el("button", {
      type: "button", "class": "gc-launcher", "aria-expanded": "false", "aria-controls": "gc-panel", text: t.open
    });
    var closer = el("button", { type: "button", "class": "gc-close", "aria-label": t.close, text: "×" });
    panel.querySelector(".gc-header").appendChild(closer);
    panel.hidden = true;
    root.appendChild(launcher);
    root.appendChild(panel);
    document.body.appendChild(root);
    launcher.addEventListener("click", function () { setOpen(panel.hidden); });
    closer.addEventListener("click", function () { setOpen(false); });
    panel.addEventListener("keydown", function (event) {
      if (event.key === "Escape") { setOpen(false); }
    });
  }

  function setOpen(open) {
    panel.hidden = !open;
    launcher.setAttribute("aria-expanded", String(open));
    if (open) {
      connect();
      focusFirst(true);
    } else {
      launcher.focus();
    }
  }

  // Move focus to the field to fill, unless the person is busy elsewhere on the page.
  function focusFirst(force) {
    var active = document.activeElement;
    var idle = !active || active === document.body || active === launcher || panel.contains(active);
    if (panel.hidden || (!force && !idle)) { return; }
    if (!composer.hidden) { textarea.focus(); } else if (!prechat.hidden) { nameInput.focus(); }
  }

  // ---------------------------------------------------------------- the log
  var shown = {};
  var pending = {};  // id -> {frame, item}: written, not yet acknowledged (re-sent on reconnect)
  var maxUpload = 0;

  function render(who, key, text, files, state) {
    if (shown[key]) { return shown[key]; }
    var item = el("li", { "class": "gc-msg gc-" + who, "data-key": key }, [
      el("span", { "class": "gc-who", text: who === "visitor" ? t.you : t.guichet })
    ]);
    if (text) { item.appendChild(el("p", { "class": "gc-text", text: text })); }
    if (files && files.length) {
      item.appendChild(el("p", { "class": "gc-files", text: t.files + files.join(", ") }));
    }
    item.appendChild(el("span", { "class": "gc-state", text: state || "" }));
    log.appendChild(item);
    log.scrollTop = log.scrollHeight;
    shown[key] = item;
    return item;
  }

  function setState(item, text, failed) {
    var state = item.querySelector(".gc-state");
    state.textContent = text;
    item.classList.toggle("gc-failed", !!failed);
    item.classList.toggle("gc-received", text === t.received);
  }

  function entry(frame) {
    if (frame.type === "reply") {
      render("guichet", "r" + frame.id, frame.text);
    } else {
      var item = render("visitor", "m" + frame.id, frame.text, frame.files, t.received);
      setState(item, t.received);
    }
  }

  // ---------------------------------------------------------------- the socket
  var socket = null;
  var ready = false;
  var retryDelay = 1000;
  var startFrame = null;

  function send(frame) {
    if (socket && socket.readyState === WebSocket.OPEN) { socket.send(JSON.stringify(frame)); return true; }
    return false;
  }

  function connect() {
    if (socket) { return; }
    status.textContent = t.connecting;
    socket = new WebSocket(WS_URL);
    socket.addEventListener("open", function () {
      retryDelay = 1000;
      var token = localStorage.getItem(TOKEN_KEY);
      if (token) { send({ type: "resume", token: token }); }
      else if (startFrame) { send(startFrame); }
      else { showPrechat(); }
    });
    socket.addEventListener("message", function (event) {
      var frame;
      try { frame = JSON.parse(event.data); } catch (e) { return; }
      handle(frame);
    });
    socket.addEventListener("close", function () {
      socket = null;
      ready = false;
      status.textContent = t.offline;
      setTimeout(connect, retryDelay);
      retryDelay = Math.min(retryDelay * 2, 30000);
    });
  }

  function showPrechat() {
    status.textContent = t.online;
    prechat.hidden = false;
    composer.hidden = true;
    focusFirst(false);
  }

  function opened(frame) {
    ready = true;
    maxUpload = frame.max_upload_bytes || 0;
    status.textContent = t.online;
    prechat.hidden = true;
    composer.hidden = false;
    focusFirst(false);
    Object.keys(pending).forEach(function (id) { send(pending[id].frame); });
  }

  function handle(frame) {
    if (frame.type === "started") {
      localStorage.setItem(TOKEN_KEY, frame.token);
      startFrame = null;
      opened(frame);
    } else if (frame.type === "resumed") {
      (frame.history || []).forEach(entry);
      opened(frame);
    } else if (frame.type === "ack") {
      if (pending[frame.id]) { setState(pending[frame.id].item, t.received); delete pending[frame.id]; }
    } else if (frame.type === "message" || frame.type === "reply") {
      entry(frame);
    } else if (frame.type === "error") {
      failed(frame);
    }
  }

  function failed(frame) {
    if (frame.code === "unknown_token") {
      localStorage.removeItem(TOKEN_KEY);
      showPrechat();
      status.textContent = t.restart;
      return;
    }
    var waiting = frame.id && pending[frame.id];
    if (frame.code === "not_stored" && (waiting || startFrame)) {
      // Not stored: keep it and send it again when the server says (its retry_after); the
      // server makes the retry idempotent.
      var seconds = retryAfter(frame.retry_after);
      if (waiting) {
        setState(waiting.item, retrying(seconds));
        setTimeout(function () { if (pending[frame.id]) { send(pending[frame.id].frame); } }, seconds * 1000);
      } else {
        status.textContent = retrying(seconds);
        setTimeout(function () { if (startFrame && !send(startFrame)) { connect(); } }, seconds * 1000);
      }
      return;
    }
    if (waiting) {
      setState(waiting.item, t.failed + frame.reason, true);
      delete pending[frame.id];
    } else {
      status.textContent = t.failed + frame.reason;
    }
  }

  function retryAfter(value) {
    var seconds = parseInt(value, 10);
    return seconds > 0 ? Math.min(seconds, 300) : 2;
  }

  function retrying(seconds) { return t.retrying.replace("{s}", String(seconds)); }

  // ---------------------------------------------------------------- the forms
  prechat.addEventListener("submit", function (event) {
    event.preventDefault();
    startFrame = {
      type: "start", language: lang,
      name: nameInput.value, email: emailInput.value, phone: phoneInput.value
    };
    if (!send(startFrame)) { connect(); }
  });

  function sendText() {
    var text = textarea.value.trim();
    if (!text) { return; }
    var id = newId();
    var frame = { type: "message", id: id, text: text };
    var item = render("visitor", "m" + id, text, [], t.sending);
    pending[id] = { frame: frame, item: item };
    textarea.value = "";
    if (ready) { send(frame); }
  }

  composer.addEventListener("submit", function (event) { event.preventDefault(); sendText(); });
  textarea.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); sendText(); }
  });

  function upload(input) {
    var files = Array.prototype.slice.call(input.files || []);
    input.value = "";
    if (!files.length) { return; }
    var id = newId();
    var names = files.map(function (f) { return f.name; });
    var item = render("visitor", "m" + id, "", names, t.sending);
    var size = files.reduce(function (sum, f) { return sum + f.size; }, 0);
    if (maxUpload && size > maxUpload) {
      setState(item, t.failed + t.tooLarge + Math.round(maxUpload / 1048576) + " MB)", true);
      return;
    }
    var form = new FormData();
    form.append("id", id);
    files.forEach(function (f) { form.append("file", f, f.name); });
    post(form, item);
  }

  function post(form, item) {
    fetch(UPLOAD_URL, {
      method: "POST", body: form,
      headers: { "X-Chat-Token": localStorage.getItem(TOKEN_KEY) || "" }
    }).then(function (response) {
      if (response.status === 503) {
        // Not stored: the same upload again when the server says (same id: idempotent).
        var seconds = retryAfter(response.headers.get("Retry-After"));
        setState(item, retrying(seconds));
        setTimeout(function () { post(form, item); }, seconds * 1000);
        return;
      }
      return response.json().then(function (body) {
        if (response.ok) { setState(item, t.received); } else { setState(item, t.failed + body.error, true); }
      });
    }).catch(function (error) { setState(item, t.failed + error.message, true); });
  }

  fileInput.addEventListener("change", function () { upload(fileInput); });
  photoInput.addEventListener("change", function () { upload(photoInput); });

  if (pageMode || localStorage.getItem(TOKEN_KEY)) { connect(); }
})();
