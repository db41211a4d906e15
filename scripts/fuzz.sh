#!/usr/bin/env bash
# Fuzzes the beacon decoders, then the MQTT message parsers, with libFuzzer (cargo-fuzz), each
# for SECONDS (default 60).
# cargo-fuzz needs nightly compiler flags; RUSTC_BOOTSTRAP lets the stable toolchain accept them.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
mkdir -p fuzz/corpus/decode fuzz/corpus/messages
# Seed the corpus with one frame of each format.
for frame in 0201061aff4c000215f7826da64fa24e988024bc5b71e0893e00010002c5 \
             1bff1801beac2f234454cf6d4a0fadf2f4911ba9ffa600010002c500 \
             0303aafe1516aafe00e700010203040506070809aabbccddeeff \
             aafe10eb03676f6f676c6507 aafe20000bb81700000000 aafe200100010203040506070809 \
             aafe30f65fc145abb9b102a7; do
    printf '%s' "$frame" | xxd -r -p > "fuzz/corpus/decode/$frame"
done
RUSTC_BOOTSTRAP=1 cargo fuzz run decode fuzz/corpus/decode -- -max_total_time="$seconds"
# Seed the message corpus with one valid message of each kind.
printf '%s' '{"v":1,"shop_id":"s1","events":[{"seq":1,"event_id":"e1","type":"customer_arrived","at_ms":1,"body":{"zone":"counter"}}]}' > fuzz/corpus/messages/events
printf '%s' '{"v":1,"shop_id":"s1","from_version":0,"to_version":2,"changes":[{"version":1,"customer_ref":"C1","customer":{"display_name":"Minji","tag_ids":["ibeacon:f7826da6-4fa2-4e98-8024-bc5b71e0893e:1:2"],"eid":{"exponent":10,"keys":[{"epoch":27000,"temporary_key":"00112233445566778899aabbccddeeff"}]}}},{"version":2,"customer_ref":"C2","customer":null}]}' > fuzz/corpus/messages/changes
printf '%s' '{"v":1,"from_version":3}' > fuzz/corpus/messages/resync
printf '%s' '{"v":2,"shop_id":"s1","box_id":"box-1","stream_id":"0190e6b2-0000-7000-8000-000000000001","low_water":4,"events":[{"seq":5,"event_id":"e5","type":"order_recorded","at_ms":1,"body":{"items":["tea"]}}]}' > fuzz/corpus/messages/events-v2
printf '%s' '{"v":2,"stream_id":"0190e6b2-0000-7000-8000-000000000001","up_to_seq":4,"stream_conflict_at":5}' > fuzz/corpus/messages/ack
printf '%s' '{"v":2,"online":true,"software":"0.1.0"}' > fuzz/corpus/messages/status
RUSTC_BOOTSTRAP=1 cargo fuzz run messages fuzz/corpus/messages -- -max_total_time="$seconds"
