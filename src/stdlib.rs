//! The standard library modules written in conc, embedded in the binary so `import "std/…"`
//! works wherever the binary is copied.

macro_rules! modules {
    ($($name:literal),* $(,)?) => {
        const MODULES: &[(&str, &str)] = &[$(($name, include_str!(concat!("../stdlib/", $name, ".conc")))),*];
    };
}

modules!("fs", "json", "parallel", "path", "strings");

/// The name a standard module's source is reported under: `<stdlib>/json.conc`.
pub fn file_name(module: &str) -> String {
    format!("{LIBRARY_PREFIX}{module}.conc")
}

const LIBRARY_PREFIX: &str = "<stdlib>/";

/// Whether a source file (by the name it is reported under) is a standard module.
pub fn is_library_file(name: &str) -> bool {
    name.starts_with(LIBRARY_PREFIX)
}

pub fn source(name: &str) -> Option<&'static str> {
    MODULES.iter().find(|(n, _)| *n == name).map(|(_, text)| *text)
}

pub fn names() -> impl Iterator<Item = &'static str> {
    MODULES.iter().map(|(n, _)| *n)
}
