//! The language reference runs: every ```conc block in `docs/*.md` is executed.
//! A block followed directly by an ```output block must print exactly that.
//! A block fenced as ```conc,error must fail; its ```output block (if any) then holds a
//! substring the error message must contain.

use std::path::Path;
use std::process::Command;

struct Block {
    line: usize,
    code: String,
    expect_error: bool,
    output: Option<String>,
}

fn blocks(text: &str) -> Vec<Block> {
    let mut out: Vec<Block> = Vec::new();
    let mut lines = text.lines().enumerate().peekable();
    while let Some((n, line)) = lines.next() {
        let fence = line.trim_start();
        let Some(info) = fence.strip_prefix("```") else { continue };
        let info = info.trim();
        let mut body = String::new();
        for (_, l) in lines.by_ref() {
            if l.trim_start().starts_with("```") {
                break;
            }
            body.push_str(l);
            body.push('\n');
        }
        match info {
            "conc" | "conc,error" => {
                out.push(Block { line: n + 1, code: body, expect_error: info == "conc,error", output: None })
            }
            "output" => {
                if let Some(last) = out.last_mut() {
                    if last.output.is_none() {
                        last.output = Some(body);
                    }
                }
            }
            _ => {}
        }
        while lines.peek().is_some_and(|(_, l)| l.trim().is_empty()) {
            lines.next();
        }
    }
    out
}

fn check_file(path: &Path) -> (usize, Vec<String>) {
    let text = std::fs::read_to_string(path).expect("readable doc");
    let mut failures = Vec::new();
    let all = blocks(&text);
    for b in &all {
        let out = Command::new(env!("CARGO_BIN_EXE_conc"))
            .arg("-e")
            .arg(&b.code)
            .env("NO_COLOR", "1")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("conc runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let ok = out.status.success();
        let here = format!("{}:{}", path.display(), b.line);
        if b.expect_error {
            if ok {
                failures.push(format!("{here}: expected an error, but it succeeded"));
            } else if let Some(want) = &b.output {
                if !stderr.contains(want.trim()) {
                    failures.push(format!("{here}: error should mention {:?}\n{stderr}", want.trim()));
                }
            }
        } else if !ok {
            failures.push(format!("{here}: failed with status {:?}\n{stderr}", out.status.code()));
        } else if let Some(want) = &b.output {
            if stdout != *want {
                failures.push(format!("{here}: output differs\n--- expected\n{want}--- got\n{stdout}"));
            }
        }
    }
    (all.len(), failures)
}

#[test]
fn docs_code_blocks_run() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    let mut total = 0;
    let mut failures = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("docs/ exists").flatten() {
        let p = entry.path();
        if p.extension().is_some_and(|e| e == "md") {
            let (n, f) = check_file(&p);
            total += n;
            failures.extend(f);
        }
    }
    assert!(total > 0, "no conc code blocks found in docs/");
    assert!(failures.is_empty(), "{} doc blocks failed:\n{}", failures.len(), failures.join("\n\n"));
}
