//! The printable label of a box: what the owner needs to take it over the first time (its
//! setup code), and what support asks for (its box id). Written by
//! `tastesync-edge setup-code --label FILE`, on the box, never served on the LAN.

/// The label as a small HTML page, sized for a sticker.
pub fn html(box_id: &str, setup_code: &str, listen: &str) -> String {
    let port = listen.rsplit_once(':').map_or("8080", |(_, port)| port);
    let escape = |text: &str| {
        text.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    format!(
        r#"<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>TasteSync box {box_id}</title>
<style>
  @page {{ size: 90mm 50mm; margin: 4mm; }}
  body {{ font: 11pt system-ui, "Noto Sans KR", sans-serif; margin: 0; }}
  .code {{ font: bold 22pt ui-monospace, monospace; letter-spacing: .15em; margin: 2mm 0; }}
  .small {{ font-size: 8pt; color: #444; }}
</style></head>
<body>
  <div><b>TasteSync</b> · box {box_id}</div>
  <div class="small">Owner setup code / 사장님 설정 코드</div>
  <div class="code">{code}</div>
  <div class="small">Open http://&lt;this box&gt;:{port}/owner on the shop's network, set the owner's PIN
  with this code. / 매장 네트워크에서 http://&lt;장치 주소&gt;:{port}/owner 를 열고 이 코드로 PIN을 설정하세요.</div>
</body>
</html>
"#,
        box_id = escape(box_id),
        code = escape(setup_code),
        port = escape(port),
    )
}
