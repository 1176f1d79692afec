//! The GGUF importer: any bytes. Whatever imports must write a .klt file
//! that opens and verifies, export to GGUF again, and import from that
//! export to the same model.
#![no_main]

use kinglet_fuzz::check_imported;
use kinglet_tools::gguf;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = gguf::read::parse(data);
    let Ok(model) = gguf::read::import(data) else {
        return;
    };
    if !check_imported(&model) {
        return;
    }
    let mut exported = Vec::new();
    if gguf::write::export(&model, "fuzz", &mut exported).is_ok() {
        let again = gguf::read::import(&exported).expect("our export imports");
        assert_eq!(again, model, "GGUF round trip");
    }
});
