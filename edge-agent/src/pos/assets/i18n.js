// Korean and English UI text. The language follows the browser unless the user switched it.
const TEXT = {
  en: {
    title_pos: "TasteSync POS", title_owner: "TasteSync owner",
    pair_title: "Pair this tablet", pair_help: "Enter the 8-digit code shown on the owner page.",
    pair_code: "Pairing code", pair_name: "Tablet name", pair_button: "Pair",
    in_shop: "In the shop now", alerts: "Arrivals", no_alerts: "Waiting for customers…",
    is_here: "{name} is here", visit_nth: "{n} visit", first_visit: "first visit",
    last_visit: "last {ago}", usual: "Usually", likes: "Likes", careful: "Careful",
    suggest: "Suggest", ack: "Got it", handled_by: "Handled by {name}",
    order: "Record order", order_prompt: "Items ordered, separated by commas",
    feedback: "Feedback", feedback_prompt: "How satisfied was the customer?", comment: "Comment (private to the owner)",
    save: "Save", cancel: "Cancel", saved: "Saved", left: "left after {min} min",
    connected: "Live", reconnecting: "Reconnecting…", unpaired: "This tablet was unpaired. Pair it again.",
    owner_setup: "Set the owner's PIN", owner_setup_help: "At least 6 characters, not a run or repeat of digits. Only the owner should know it.",
    setup_code: "Setup code (on the box's label)", change_pin: "Change the PIN", current_pin: "Current PIN", new_pin: "New PIN", pin_changed: "PIN changed",
    owner_login: "Owner login", pin: "PIN or passphrase", login: "Log in", set_pin: "Set PIN",
    present: "In the shop now", visits_today: "Visits today", returning: "Returning customers",
    dwell: "Average stay", satisfaction: "Satisfaction (private)", busiest: "Busiest hours",
    tablets: "Paired tablets", pair_tablet: "Pair a tablet", code_valid: "Code valid for 10 minutes",
    revoke: "Unpair", revoked: "unpaired", health: "Box health", scanner: "Scanner",
    running: "running", stopped: "stopped", last_adv: "Last advertisement", advertisements: "Advertisements",
    recognised: "From customers", cloud: "Cloud sync", not_configured: "not configured", storage: "Storage", ok: "ok", none_yet: "none yet", min: "min",
    clock: "Clock", clock_ok: "synchronised", clock_provisional: "not synchronised yet: visit times are provisional, corrected once network time arrives",
    ago_now: "just now", ago_min: "{n} min ago", ago_h: "{n} h ago", ago_d: "{n} days ago",
    claim_title: "Claim this box", claim_code: "Claim code from HQ", claim_button: "Claim",
    claim_help: "This box does not belong to a shop yet. Type the claim code HQ gave you; the box then connects to the cloud and receives your customers.",
    claim_help_revoked: "HQ revoked this box: it keeps working in the shop, offline. To connect it again, type a new claim code from HQ.",
    claim_after_login: "This box is not claimed yet: log in (or set the PIN), then claim it with the code from HQ.",
    this_box: "This box", box_id: "Box id", standing: "State", shop: "Shop",
    standing_setup: "not claimed", standing_claimed: "claimed", standing_configured: "set up by hand", standing_revoked: "revoked by HQ",
    floor_map: "Floor map", floor_upload: "Upload a plan image", floor_remove_plan: "Remove the image",
    floor_no_plan: "Upload a picture of the shop's floor plan (PNG, JPEG or WebP, at most 2 MB), then place the zones and scanners on it.",
    floor_help: "Type a zone's name or choose a scanner, press Place, then click on the plan where it is.",
    floor_click: "Click on the plan where “{name}” is (Esc to cancel).", floor_need_name: "Type the zone's name first.",
    floor_no_scanners: "no scanner heard yet", zone_name: "Zone name, e.g. counter", place_zone: "Place a zone", place_scanner: "Place a scanner",
    zone_visits: "visits today: {n}", zone_dwell: "avg {time}", sec: "s", remove_mark: "Remove {name}",
    scanner_heard: "heard in the last minute", scanner_silent: "silent for over a minute", scanner_never: "not heard since the box started",
    floor_unplaced: "Zones not on the plan yet", floor_here: "{n} here",
  },
  ko: {
    title_pos: "TasteSync POS", title_owner: "TasteSync 사장님 페이지",
    pair_title: "태블릿 연결", pair_help: "사장님 페이지에 표시된 8자리 코드를 입력하세요.",
    pair_code: "연결 코드", pair_name: "태블릿 이름", pair_button: "연결",
    in_shop: "지금 매장에", alerts: "방문 알림", no_alerts: "손님을 기다리는 중…",
    is_here: "{name} 님 방문", visit_nth: "{n}번째 방문", first_visit: "첫 방문",
    last_visit: "지난 방문 {ago}", usual: "자주 주문", likes: "선호", careful: "주의",
    suggest: "추천", ack: "확인", handled_by: "{name}에서 확인함",
    order: "주문 기록", order_prompt: "주문한 메뉴 (쉼표로 구분)",
    feedback: "피드백", feedback_prompt: "손님의 만족도는?", comment: "메모 (사장님만 볼 수 있음)",
    save: "저장", cancel: "취소", saved: "저장됨", left: "{min}분 머물고 떠남",
    connected: "실시간", reconnecting: "다시 연결 중…", unpaired: "이 태블릿의 연결이 해제되었습니다. 다시 연결하세요.",
    owner_setup: "사장님 PIN 설정", owner_setup_help: "6자 이상, 연속되거나 반복되는 숫자는 안 됩니다. 사장님만 알고 있어야 합니다.",
    setup_code: "설정 코드 (장치 라벨에 있음)", change_pin: "PIN 변경", current_pin: "현재 PIN", new_pin: "새 PIN", pin_changed: "PIN이 변경되었습니다",
    owner_login: "사장님 로그인", pin: "PIN 또는 암호", login: "로그인", set_pin: "PIN 설정",
    present: "지금 매장에", visits_today: "오늘 방문", returning: "재방문 비율",
    dwell: "평균 체류", satisfaction: "만족도 (비공개)", busiest: "붐비는 시간",
    tablets: "연결된 태블릿", pair_tablet: "태블릿 연결하기", code_valid: "코드는 10분간 유효",
    revoke: "연결 해제", revoked: "해제됨", health: "장치 상태", scanner: "스캐너",
    running: "작동 중", stopped: "멈춤", last_adv: "마지막 신호", advertisements: "수신한 신호",
    recognised: "고객 신호", cloud: "클라우드 동기화", not_configured: "설정 안 됨", storage: "저장 공간", ok: "정상", none_yet: "아직 없음", min: "분",
    clock: "시계", clock_ok: "동기화됨", clock_provisional: "아직 동기화 안 됨: 방문 시각은 임시이며 인터넷 시간이 들어오면 바로잡힙니다",
    ago_now: "방금", ago_min: "{n}분 전", ago_h: "{n}시간 전", ago_d: "{n}일 전",
    claim_title: "이 장치 등록하기", claim_code: "본사에서 받은 등록 코드", claim_button: "등록",
    claim_help: "이 장치는 아직 매장에 등록되지 않았습니다. 본사에서 받은 등록 코드를 입력하면 클라우드에 연결되고 고객 정보를 받습니다.",
    claim_help_revoked: "본사가 이 장치의 등록을 취소했습니다. 매장에서는 오프라인으로 계속 작동합니다. 다시 연결하려면 본사에서 받은 새 등록 코드를 입력하세요.",
    claim_after_login: "이 장치는 아직 등록되지 않았습니다. 로그인(또는 PIN 설정) 후 본사에서 받은 코드로 등록하세요.",
    this_box: "이 장치", box_id: "장치 ID", standing: "상태", shop: "매장",
    standing_setup: "등록 안 됨", standing_claimed: "등록됨", standing_configured: "직접 설정됨", standing_revoked: "본사가 등록 취소",
    floor_map: "매장 지도", floor_upload: "도면 이미지 올리기", floor_remove_plan: "이미지 삭제",
    floor_no_plan: "매장 도면 사진(PNG, JPEG, WebP, 2MB 이하)을 올린 뒤 구역과 스캐너를 도면 위에 배치하세요.",
    floor_help: "구역 이름을 입력하거나 스캐너를 고른 뒤 배치를 누르고, 도면에서 그 위치를 클릭하세요.",
    floor_click: "도면에서 “{name}”의 위치를 클릭하세요 (Esc: 취소).", floor_need_name: "먼저 구역 이름을 입력하세요.",
    floor_no_scanners: "아직 수신된 스캐너 없음", zone_name: "구역 이름 (예: counter)", place_zone: "구역 배치", place_scanner: "스캐너 배치",
    zone_visits: "오늘 방문 {n}회", zone_dwell: "평균 {time}", sec: "초", remove_mark: "{name} 삭제",
    scanner_heard: "최근 1분 내 수신", scanner_silent: "1분 넘게 수신 없음", scanner_never: "장치 시작 후 수신 없음",
    floor_unplaced: "아직 도면에 없는 구역", floor_here: "{n}명 있음",
  },
};

let lang = localStorage.getItem("lang") ||
  ((navigator.languages || [navigator.language]).some((l) => (l || "").startsWith("ko")) ? "ko" : "en");

function t(key, vars = {}) {
  const text = (TEXT[lang] && TEXT[lang][key]) || TEXT.en[key] || key;
  return text.replace(/\{(\w+)\}/g, (_, k) => (k in vars ? vars[k] : ""));
}

function ordinal(n) {
  if (lang === "ko") return t("visit_nth", { n });
  const s = n % 100 >= 11 && n % 100 <= 13 ? "th" : ({ 1: "st", 2: "nd", 3: "rd" }[n % 10] || "th");
  return t("visit_nth", { n: n + s });
}

function ago(ms) {
  const min = Math.floor((Date.now() - ms) / 60000);
  if (min < 1) return t("ago_now");
  if (min < 60) return t("ago_min", { n: min });
  if (min < 48 * 60) return t("ago_h", { n: Math.floor(min / 60) });
  return t("ago_d", { n: Math.floor(min / 1440) });
}

function applyText() {
  document.documentElement.lang = lang;
  document.querySelectorAll("[data-i18n]").forEach((el) => { el.textContent = t(el.dataset.i18n); });
  document.querySelectorAll("[data-i18n-placeholder]").forEach((el) => { el.placeholder = t(el.dataset.i18nPlaceholder); });
  const toggle = document.getElementById("lang");
  if (toggle) toggle.textContent = lang === "ko" ? "English" : "한국어";
}

function switchLanguage(render) {
  lang = lang === "ko" ? "en" : "ko";
  localStorage.setItem("lang", lang);
  applyText();
  render();
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

// A random UUID without crypto.randomUUID (tablets reach the box over plain http on the LAN).
function uuid() {
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40; b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}
