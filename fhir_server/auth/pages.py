"""The authorization server's pages: sign-in and the authorization (consent) screen.

Plain server-rendered HTML that works without JavaScript, in French and English. Every form carries
the session's CSRF token. Pure functions from data to HTML; all text is escaped.
"""
from __future__ import annotations

from html import escape

TEXT = {
    "fr": {
        "title": "Dossier médical partagé", "login": "Connexion", "username": "Identifiant",
        "password": "Mot de passe", "sign_in": "Se connecter", "bad_login": "Identifiant ou mot de passe incorrect.",
        "authorize": "Autoriser l'accès", "asks": "L'application « {app} » demande l'accès suivant :",
        "as": "Vous êtes connecté en tant que {user}.", "allow": "Autoriser", "deny": "Refuser",
        "patient": "Patient (identifiant)", "purpose": "Mode d'accès",
        "TREAT": "Accès normal", "BTG": "Bris de glace (urgence)", "ETREAT": "Régulation (centre 15)",
        "error": "La demande d'autorisation ne peut pas aboutir", "other": "Se connecter avec un autre compte",
        "external": "Se connecter avec {provider}",
    },
    "en": {
        "title": "Shared medical record", "login": "Sign in", "username": "Username", "password": "Password",
        "sign_in": "Sign in", "bad_login": "Wrong username or password.", "authorize": "Authorize access",
        "asks": "The application “{app}” asks for this access:", "as": "You are signed in as {user}.",
        "allow": "Allow", "deny": "Deny", "patient": "Patient (id)", "purpose": "Access mode",
        "TREAT": "Normal access", "BTG": "Break the glass (emergency)", "ETREAT": "Emergency regulation (centre 15)",
        "error": "The authorization request cannot proceed", "other": "Sign in with another account",
        "external": "Sign in with {provider}",
    },
}


def language(accept_language: str | None, requested: str | None = None) -> str:
    for candidate in ([requested] if requested else []) + [
            part.split(";")[0].strip().lower() for part in (accept_language or "").split(",")]:
        if candidate and candidate[:2] in TEXT:
            return candidate[:2]
    return "fr"


def _page(lang: str, heading: str, body: str) -> str:
    t = TEXT[lang]
    return (f'<!DOCTYPE html>\n<html lang="{lang}"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(heading)} · {escape(t['title'])}</title>"
            "<style>body{font-family:system-ui,sans-serif;max-width:32rem;margin:2rem auto;padding:0 1rem}"
            "label{display:block;margin:.8rem 0 .2rem}input,select{width:100%;padding:.4rem}"
            "button{margin:1rem .5rem 0 0;padding:.5rem 1.2rem}.error{color:#a00}</style></head>"
            f"<body><h1>{escape(heading)}</h1>{body}</body></html>")


def _hidden(csrf: str) -> str:
    return f'<input type="hidden" name="csrf" value="{escape(csrf)}">'


def login(lang: str, action: str, csrf: str, failed: bool = False, external: str | None = None) -> str:
    t = TEXT[lang]
    error = f'<p class="error" role="alert">{escape(t["bad_login"])}</p>' if failed else ""
    federated = ""
    if external:
        federated = (f'<form method="post" action="{escape(action)}">{_hidden(csrf)}'
                     f'<button name="action" value="external">{escape(t["external"].format(provider=external))}'
                     "</button></form>")
    return _page(lang, t["login"], f"""{error}
<form method="post" action="{escape(action)}">{_hidden(csrf)}
<label for="username">{escape(t["username"])}</label><input id="username" name="username" autocomplete="username" required>
<label for="password">{escape(t["password"])}</label><input id="password" name="password" type="password" autocomplete="current-password" required>
<button name="action" value="login">{escape(t["sign_in"])}</button></form>{federated}""")


def consent(lang: str, action: str, csrf: str, app: str, user: str, scopes: list[str], pick_patient: bool,
            purposes: list[str]) -> str:
    t = TEXT[lang]
    items = "".join(f"<li><code>{escape(s)}</code></li>" for s in scopes)
    fields = ""
    if pick_patient:
        fields += (f'<label for="patient">{escape(t["patient"])}</label>'
                   '<input id="patient" name="patient" required pattern="[A-Za-z0-9\\-\\.]{1,64}">')
    if len(purposes) > 1:
        options = "".join(f'<option value="{p}">{escape(t[p])}</option>' for p in purposes)
        fields += f'<label for="purpose">{escape(t["purpose"])}</label><select id="purpose" name="purpose">{options}</select>'
    return _page(lang, t["authorize"], f"""<p>{escape(t["as"].format(user=user))}</p>
<p>{escape(t["asks"].format(app=app))}</p><ul>{items}</ul>
<form method="post" action="{escape(action)}">{_hidden(csrf)}{fields}
<button name="action" value="approve">{escape(t["allow"])}</button>
<button name="action" value="deny" formnovalidate>{escape(t["deny"])}</button>
<button name="action" value="logout" formnovalidate>{escape(t["other"])}</button></form>""")


def error(lang: str, message: str) -> str:
    return _page(lang, TEXT[lang]["error"], f'<p class="error" role="alert">{escape(message)}</p>')
