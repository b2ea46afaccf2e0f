//! Config parsing and resolution on arbitrary YAML.

pub fn run(data: &[u8]) {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(f) = pylon_server::config::parse_yaml(s) {
            let _ = pylon_server::Config::resolve(f, &pylon_server::Overrides::default());
        }
    }
}
