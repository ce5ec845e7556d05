// WebAuthn ceremonies for the Clearance inbox: register a security key, or verify with one.
// Buttons carry data-webauthn="register|authenticate", data-csrf, data-status and data-next.
"use strict";
(function () {
  function toBuf(s) {
    const pad = "=".repeat((4 - (s.length % 4)) % 4);
    const b = atob((s + pad).replace(/-/g, "+").replace(/_/g, "/"));
    return Uint8Array.from(b, (c) => c.charCodeAt(0)).buffer;
  }
  function toB64(buf) {
    let s = "";
    new Uint8Array(buf).forEach((x) => { s += String.fromCharCode(x); });
    return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }
  async function post(url, csrf, body) {
    const res = await fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: { "X-CSRF-Token": csrf, "Content-Type": "application/json" },
      body: body === undefined ? "" : JSON.stringify(body),
    });
    const data = await res.json();
    if (!res.ok || data.ok === false) { throw new Error(data.message || "refused"); }
    return data;
  }
  async function ceremony(btn) {
    const kind = btn.dataset.webauthn, csrf = btn.dataset.csrf;
    const opts = await post("/ui/webauthn/" + kind + "/options", csrf);
    opts.challenge = toBuf(opts.challenge);
    (opts.excludeCredentials || []).forEach((c) => { c.id = toBuf(c.id); });
    (opts.allowCredentials || []).forEach((c) => { c.id = toBuf(c.id); });
    let body;
    if (kind === "register") {
      opts.user.id = toBuf(opts.user.id);
      const cred = await navigator.credentials.create({ publicKey: opts });
      body = {
        id: cred.id, rawId: toB64(cred.rawId), type: cred.type,
        response: {
          clientDataJSON: toB64(cred.response.clientDataJSON),
          attestationObject: toB64(cred.response.attestationObject),
          transports: cred.response.getTransports ? cred.response.getTransports() : [],
        },
      };
    } else {
      const cred = await navigator.credentials.get({ publicKey: opts });
      body = {
        id: cred.id, rawId: toB64(cred.rawId), type: cred.type,
        response: {
          clientDataJSON: toB64(cred.response.clientDataJSON),
          authenticatorData: toB64(cred.response.authenticatorData),
          signature: toB64(cred.response.signature),
          userHandle: cred.response.userHandle ? toB64(cred.response.userHandle) : null,
        },
      };
    }
    return post("/ui/webauthn/" + kind, csrf, body);
  }
  document.querySelectorAll("[data-webauthn]").forEach((btn) => {
    btn.addEventListener("click", (event) => {
      event.preventDefault();
      const status = document.getElementById(btn.dataset.status);
      btn.disabled = true;
      ceremony(btn).then((out) => {
        status.textContent = out.message;
        if (btn.dataset.next) { window.location.assign(btn.dataset.next); }
      }).catch((err) => {
        status.textContent = "Not verified: " + err.message;
      }).finally(() => { btn.disabled = false; });
    });
  });
})();
