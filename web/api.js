// The REST client of the UI: the API key lives in sessionStorage (gone with the tab), goes out as
// the Authorization header, never in a URL. Errors are the API's own JSON ({error: {code, message}}).
const KEY = "deeplens.apiKey";

export const session = {
  key: () => sessionStorage.getItem(KEY),
  set: (k) => sessionStorage.setItem(KEY, k),
  clear: () => sessionStorage.removeItem(KEY),
};

export class ApiError extends Error {
  constructor(status, body) {
    const e = body && body.error ? body.error : { code: "HTTP_" + status, message: "HTTP " + status };
    super(e.message);
    this.status = status;
    this.code = e.code;
  }
}

async function parse(res) {
  const text = await res.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch { body = null; }
  if (!res.ok) throw new ApiError(res.status, body);
  return body;
}

export async function api(method, path, body) {
  const headers = { Authorization: "Bearer " + session.key() };
  let payload;
  if (body instanceof FormData) payload = body;
  else if (body !== undefined) { headers["Content-Type"] = "application/json"; payload = JSON.stringify(body); }
  const res = await fetch(path, { method, headers, body: payload });
  if (res.status === 204) return null;
  return parse(res);
}

// Multipart upload with progress (fetch cannot report upload progress): onProgress(sent, total).
export function uploadFile(file, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/api/v1/images/upload");
    xhr.setRequestHeader("Authorization", "Bearer " + session.key());
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) onProgress(e.loaded, e.total); };
    xhr.onload = () => {
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch { body = null; }
      if (xhr.status >= 200 && xhr.status < 300) resolve(body);
      else reject(new ApiError(xhr.status, body));
    };
    xhr.onerror = () => reject(new ApiError(0, { error: { code: "NETWORK", message: "the server cannot be reached" } }));
    const form = new FormData();
    form.append("file", file, file.name);
    xhr.send(form);
  });
}

// An authenticated image (thumbnail or content) as an object URL for <img src>.
export async function imageUrl(path) {
  const res = await fetch(path, { headers: { Authorization: "Bearer " + session.key() } });
  if (!res.ok) throw new ApiError(res.status, null);
  return URL.createObjectURL(await res.blob());
}
