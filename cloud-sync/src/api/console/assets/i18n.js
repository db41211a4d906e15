// Korean and English text of the HQ console. The language follows the browser unless the
// user switched it (remembered on this browser).
const TEXT = {
  en: {
    title: "TasteSync HQ", lang_switch: "한국어",
    nav_shops: "Shops", nav_customers: "Customers", nav_analytics: "Analytics",
    nav_feedback: "Feedback", nav_privacy: "Privacy", nav_audit: "Audit log",
    sign_in: "Sign in", sign_out: "Sign out", email: "Email", password: "Password",
    signed_out: "Your session ended; sign in again.",
    loading: "Loading…", save: "Save", cancel: "Cancel", close: "Close", more: "More", none: "None",
    all_shops: "All shops", chain: "Whole chain", shop: "Shop", filter: "Filter",
    // shops
    shops_filter: "Find a shop", showing: "Showing {n} of {m}", add_shop: "Add a shop",
    shop_id: "Shop id", shop_name: "Name", time_zone: "Time zone",
    boxes: "Boxes", no_boxes: "No box yet: give the owner a claim code.",
    box: "Box", state: "State", online: "online", offline: "offline", revoked: "revoked",
    last_seen: "Last seen", last_event: "Last event", backlog: "Waiting to send", oldest_unsent: "Oldest unsent",
    software: "Software", claimed: "Claimed", first_release: "(first release)",
    revoke: "Revoke", revoke_confirm: "Revoke box {box}? The broker refuses it at once; it keeps working offline until it is claimed again.",
    kafka_waiting: "{n} events waiting for Kafka (oldest stored {since})",
    gaps: "Gaps", gap_restore: "lost with a database restore", gap_conflict: "box's store went back",
    claim_codes: "Claim codes", new_claim_code: "New claim code",
    claim_code_shown: "Claim code for {shop}: type it on the box's owner page. Shown only now; valid until {until}.",
    code_open: "open", code_used: "used by {box}", code_expired: "expired", created: "Created", expires: "Expires",
    // customers
    search: "Search by ref, name or tag", enroll: "Enroll a customer", edit: "Edit", delete: "Delete",
    customer_ref: "Customer ref", display_name: "Name", tier: "Tier", notes: "Notes (allergies…)",
    preferences: "Preferences", shops: "Shops", tags: "Static tags (one per line)",
    eid: "EID tag", eid_new: "Give them an EID tag (phone or rotating tag)", eid_keep: "Keep", eid_renew: "New key (lost tag)", eid_remove: "Remove",
    eid_exponent: "Rotation exponent", visits: "Visits", last_visit: "Last visit",
    eid_key_once: "The EID identity key for their tag. Provision the tag with it now: it is not shown again.",
    delete_confirm: "Delete {name} ({ref}) at HQ and on every shop's box?",
    no_customers: "No customers found.", saved: "Saved.",
    // analytics
    from: "From", to: "To", show: "Show",
    fig_visits: "Visits", fig_returning: "Returning customers", fig_dwell: "Average stay",
    fig_satisfaction: "Satisfaction", fig_orders: "Orders", fig_feedback: "{n} ratings",
    visits_per_day: "Visits per day", new_visits: "New", returning_visits: "Returning",
    busiest_hours: "Busiest hours", top_items: "Top ordered items", shops_compared: "Shops compared",
    weekdays: "Mon,Tue,Wed,Thu,Fri,Sat,Sun", min: "min", returning_rate: "Returning",
    // feedback
    no_feedback: "No feedback yet.", customer: "Customer", erased_customer: "(erased)",
    // privacy
    privacy_help: "A customer's rights: export everything held about them, or erase them everywhere (HQ, every box, and their fields in stored events).",
    export: "Export (JSON)", erase: "Erase…", erasures: "Erasures",
    erase_title: "Erase {ref} everywhere", erase_help: "This cannot be undone. Type the customer ref to confirm.",
    erase_button: "Erase everywhere", erasure_done: "done", erasure_pending: "waiting for boxes",
    box_applied: "applied", box_waiting: "waiting", requested_by: "Requested by", events_scrubbed: "Events scrubbed",
    exported: "Exported {file}.",
    // audit
    at: "When", actor: "Who", action: "Action", target: "On", detail: "Detail", client: "From",
    // time
    ago_now: "just now", ago_min: "{n} min ago", ago_h: "{n} h ago", ago_d: "{n} days ago", never: "never",
  },
  ko: {
    title: "TasteSync 본사", lang_switch: "English",
    nav_shops: "매장", nav_customers: "고객", nav_analytics: "분석",
    nav_feedback: "피드백", nav_privacy: "개인정보", nav_audit: "감사 기록",
    sign_in: "로그인", sign_out: "로그아웃", email: "이메일", password: "비밀번호",
    signed_out: "세션이 끝났습니다. 다시 로그인하세요.",
    loading: "불러오는 중…", save: "저장", cancel: "취소", close: "닫기", more: "더 보기", none: "없음",
    all_shops: "전체 매장", chain: "전체 체인", shop: "매장", filter: "필터",
    shops_filter: "매장 찾기", showing: "{m}개 중 {n}개 표시", add_shop: "매장 추가",
    shop_id: "매장 ID", shop_name: "이름", time_zone: "시간대",
    boxes: "박스", no_boxes: "아직 박스가 없습니다. 사장님께 등록 코드를 주세요.",
    box: "박스", state: "상태", online: "온라인", offline: "오프라인", revoked: "해지됨",
    kafka_waiting: "Kafka 전송 대기 이벤트 {n}개 (가장 오래된 것 {since} 저장)",
    last_seen: "마지막 연결", last_event: "마지막 이벤트", backlog: "전송 대기", oldest_unsent: "가장 오래된 미전송",
    software: "소프트웨어", claimed: "등록", first_release: "(첫 릴리스)",
    revoke: "해지", revoke_confirm: "박스 {box}를 해지할까요? 브로커가 즉시 거부하며, 다시 등록할 때까지 오프라인으로 동작합니다.",
    gaps: "누락 구간", gap_restore: "데이터베이스 복원으로 유실", gap_conflict: "박스 저장소가 과거로 돌아감",
    claim_codes: "등록 코드", new_claim_code: "새 등록 코드",
    claim_code_shown: "{shop} 등록 코드: 박스의 사장님 페이지에 입력하세요. 지금만 표시되며 {until}까지 유효합니다.",
    code_open: "사용 가능", code_used: "{box}에서 사용", code_expired: "만료", created: "생성", expires: "만료",
    search: "고객 번호, 이름, 태그로 검색", enroll: "고객 등록", edit: "수정", delete: "삭제",
    customer_ref: "고객 번호", display_name: "이름", tier: "등급", notes: "메모 (알레르기 등)",
    preferences: "선호", shops: "매장", tags: "고정 태그 (한 줄에 하나)",
    eid: "EID 태그", eid_new: "EID 태그 발급 (휴대폰 또는 회전 태그)", eid_keep: "유지", eid_renew: "새 키 (태그 분실)", eid_remove: "삭제",
    eid_exponent: "회전 지수", visits: "방문", last_visit: "마지막 방문",
    eid_key_once: "태그에 넣을 EID 식별 키입니다. 지금 태그에 설정하세요. 다시 표시되지 않습니다.",
    delete_confirm: "{name} ({ref}) 고객을 본사와 모든 매장 박스에서 삭제할까요?",
    no_customers: "고객이 없습니다.", saved: "저장했습니다.",
    from: "시작", to: "끝", show: "보기",
    fig_visits: "방문", fig_returning: "재방문 고객", fig_dwell: "평균 체류",
    fig_satisfaction: "만족도", fig_orders: "주문", fig_feedback: "평가 {n}건",
    visits_per_day: "일별 방문", new_visits: "신규", returning_visits: "재방문",
    busiest_hours: "붐비는 시간", top_items: "인기 메뉴", shops_compared: "매장 비교",
    weekdays: "월,화,수,목,금,토,일", min: "분", returning_rate: "재방문율",
    no_feedback: "아직 피드백이 없습니다.", customer: "고객", erased_customer: "(삭제됨)",
    privacy_help: "고객의 권리: 보관 중인 모든 정보를 내보내거나, 모든 곳(본사, 모든 박스, 저장된 이벤트의 항목)에서 삭제합니다.",
    export: "내보내기 (JSON)", erase: "삭제…", erasures: "삭제 요청",
    erase_title: "{ref} 고객을 모든 곳에서 삭제", erase_help: "되돌릴 수 없습니다. 확인을 위해 고객 번호를 입력하세요.",
    erase_button: "모든 곳에서 삭제", erasure_done: "완료", erasure_pending: "박스 대기 중",
    box_applied: "적용됨", box_waiting: "대기 중", requested_by: "요청자", events_scrubbed: "정리된 이벤트",
    exported: "{file} 파일로 내보냈습니다.",
    at: "시각", actor: "사용자", action: "작업", target: "대상", detail: "내용", client: "접속지",
    ago_now: "방금", ago_min: "{n}분 전", ago_h: "{n}시간 전", ago_d: "{n}일 전", never: "없음",
  },
};

let lang = localStorage.getItem("consoleLang") || (navigator.language || "en").slice(0, 2);
if (!TEXT[lang]) lang = "en";

function t(key, vars = {}) {
  const text = (TEXT[lang] && TEXT[lang][key]) || TEXT.en[key] || key;
  return text.replace(/\{(\w+)\}/g, (_, k) => (k in vars ? vars[k] : ""));
}

function switchLanguage() {
  lang = lang === "ko" ? "en" : "ko";
  localStorage.setItem("consoleLang", lang);
  translatePage();
}

function translatePage() {
  document.documentElement.lang = lang;
  document.title = t("title");
  for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
  document.getElementById("lang").textContent = t("lang_switch");
}

function when(ms) {
  if (ms === null || ms === undefined) return t("never");
  return new Intl.DateTimeFormat(lang === "ko" ? "ko-KR" : "en-GB", { dateStyle: "medium", timeStyle: "short" }).format(new Date(ms));
}

function ago(ms) {
  if (ms === null || ms === undefined) return t("never");
  const min = Math.floor((Date.now() - ms) / 60000);
  if (min < 1) return t("ago_now");
  if (min < 60) return t("ago_min", { n: min });
  if (min < 48 * 60) return t("ago_h", { n: Math.floor(min / 60) });
  return t("ago_d", { n: Math.floor(min / 1440) });
}

function number(n) {
  return new Intl.NumberFormat(lang === "ko" ? "ko-KR" : "en-GB").format(n);
}

function percent(ratio) {
  return ratio === null || ratio === undefined ? "–" : `${Math.round(ratio * 100)}%`;
}

// Builds an element; `on…` attributes become listeners, text children are text (never HTML).
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "value") node.value = v;
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined && child !== false) node.append(child);
  }
  return node;
}
