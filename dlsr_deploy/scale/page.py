"""`GET /` of dlsr-serve: a page to try an image on. Plain HTML, a few lines of JavaScript and
inline CSS, served by the service itself (no CDN, nothing fetched but POST /score on the same
origin). It shows what the bundle holds (name, precision, score, threshold) and never a path.

The image goes to POST /score as its own bytes, exactly as a client sends it, so the decision on
the page is the service's answer for those bytes.
"""

from __future__ import annotations

import json
from html import escape

# the page's own script and styles are inline; it may only talk to this origin
CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' blob: data:; "
    "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
)

_SCRIPT = """
const info = JSON.parse(document.getElementById('info').textContent);
const $ = (id) => document.getElementById(id);
function gauge(norm) {
  // 0 = median ID score, 1.0 = threshold; the bar spans 0..2 (clipped) with the threshold at its middle
  const x = Math.max(0, Math.min(1, norm / 2));
  $('needle').style.left = (100 * x) + '%';
}
async function score(file) {
  $('preview').src = URL.createObjectURL(file);
  $('result').hidden = true; $('error').hidden = true; $('status').textContent = 'scoring...';
  const t0 = performance.now();
  let reply, status;
  try {
    const r = await fetch('/score', {method: 'POST', body: file,
      headers: {'Content-Type': file.type || 'application/octet-stream'}});
    status = r.status; reply = await r.json();
  } catch (e) { status = 0; reply = {error: String(e)}; }
  const ms = performance.now() - t0;
  $('status').textContent = '';
  if (status !== 200) {
    $('error').textContent = 'HTTP ' + status + ': ' + (reply.error || 'no answer'); $('error').hidden = false;
    return;
  }
  const r0 = reply.results[0];
  $('decision').textContent = r0.is_ood ? 'OOD' : 'in-distribution';
  $('decision').className = r0.is_ood ? 'ood' : 'id';
  $('score').textContent = r0.score.toPrecision(6);
  $('normalized').textContent = r0.normalized.toFixed(3);
  $('latency').textContent = ms.toFixed(1) + ' ms (round trip from this page)';
  gauge(r0.normalized);
  $('result').hidden = false;
}
$('file').addEventListener('change', (e) => { if (e.target.files.length) score(e.target.files[0]); });
const drop = $('drop');
drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', (e) => {
  e.preventDefault(); drop.classList.remove('over');
  if (e.dataTransfer.files.length) score(e.dataTransfer.files[0]);
});
"""

_CSS = """
body{font-family:system-ui,sans-serif;max-width:720px;margin:32px auto;padding:0 16px;color:#222}
#drop{border:2px dashed #999;border-radius:8px;padding:28px;text-align:center;margin:16px 0}
#drop.over{border-color:#1f77b4;background:#eef5fb}
#preview{width:128px;height:128px;object-fit:contain;image-rendering:pixelated}
.meta{color:#555;font-size:14px} table{border-collapse:collapse} td{padding:3px 10px 3px 0}
#decision{font-size:22px;font-weight:bold} #decision.ood{color:#c62828} #decision.id{color:#2e7d32}
#bar{position:relative;height:16px;border-radius:8px;margin:10px 0 2px;
background:linear-gradient(90deg,#c8e6c9 0%,#c8e6c9 50%,#ffcdd2 50%,#ffcdd2 100%)}
#needle{position:absolute;top:-4px;width:4px;height:24px;background:#222;margin-left:-2px}
#mark{position:absolute;left:50%;top:-6px;height:28px;border-left:2px dashed #000}
#error{color:#c62828} .scale{display:flex;justify-content:space-between;font-size:12px;color:#555}
"""


def page_html(info: dict) -> str:
    """The page for one service. info: the service's /info (bundle, precision, score_name,
    threshold, backend, native_size); embedded as JSON that cannot close its script element."""
    shown = {k: info.get(k) for k in ("bundle", "precision", "score_name", "threshold", "backend", "native_size")}
    data = json.dumps(shown).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    thr = shown["threshold"]
    thr_s = f"{thr:.6g}" if isinstance(thr, (int, float)) else "none"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>dlsr-serve: {escape(str(shown["bundle"]))}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_CSS}</style></head><body>
<h1>Score an image</h1>
<p class="meta" id="bundle">bundle <b>{escape(str(shown["bundle"]))}</b> ({escape(str(shown["precision"]))}) on
{escape(str(shown["backend"]))}; decision: {escape(str(shown["score_name"]))} &gt; {escape(thr_s)} is OOD
(higher score = more OOD); images are resized to {escape(str(shown["native_size"]))} px.</p>
<div id="drop"><p>Drop an image here, or choose one:</p>
<input type="file" id="file" accept="image/*"></div>
<p id="status" class="meta"></p><p id="error" hidden></p>
<div id="result" hidden><img id="preview" alt="the image scored">
<p id="decision"></p>
<div id="bar"><div id="mark" title="threshold"></div><div id="needle"></div></div>
<div class="scale"><span>0 (median ID)</span><span>1.0 = threshold</span><span>2+</span></div>
<table><tr><td>score</td><td id="score"></td></tr><tr><td>normalised score</td><td id="normalized"></td></tr>
<tr><td>latency</td><td id="latency"></td></tr></table></div>
<script type="application/json" id="info">{data}</script>
<script>{_SCRIPT}</script></body></html>
"""
