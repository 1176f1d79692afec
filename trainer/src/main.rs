fn main() {
    let path = std::env::args().nth(1).unwrap_or_default();
    match kinglet_trainer::reference::check_reference(std::path::Path::new(&path)) {
        Ok(r) => {
            for row in &r.rows {
                println!("{:<40} {:.3e}", row.quantity, row.worst_relative);
            }
        }
        Err(e) => eprintln!("{e}"),
    }
}
