//! The demo's safe-rollout section (`docs/rollout.md`), in a lab of its own
//! ([`chokepoint_lab::rollout`]): observe with the flow log and a staged deny, see what the
//! deny would break, recommend a policy from the logs, enforce, and check that the same traffic
//! still works while a destination nobody used is refused.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use chokepoint_lab::rollout::{SITE_A, SITE_A_NAME, SITE_B, SITE_C, Story, Traffic};
use serde_json::Value;

use super::Error;

/// Runs the section; `Ok(true)` when every step went as the story says.
pub(super) fn run(out: &mut impl Write, binary: &Path) -> Result<bool, Error> {
    writeln!(
        out,
        "\nSafe rollout (docs/rollout.md): tenant-a runs with the flow log on and a Baseline deny of everything staged"
    )?;
    let story = Story::start("demo-node", binary)?;
    writeln!(
        out,
        "lab {}: pod tenant-a/web; {SITE_A_NAME} is site-a {SITE_A}, site-b {SITE_B} is reached by address, site-c {SITE_C} by nobody",
        story.lab.prefix()
    )?;
    let mut ok = true;

    writeln!(out, "1. the usual traffic, with the deny staged:")?;
    ok &= show_traffic(out, &story.traffic())?;

    let audit = story.files.wait_audit(3, Duration::from_secs(10));
    let staged: Vec<&Value> = audit.iter().filter(|r| r.get("staged").is_some()).collect();
    writeln!(
        out,
        "2. what the staged deny would break ({} audit records with \"staged\"):",
        staged.len()
    )?;
    for r in &staged {
        writeln!(
            out,
            "   real verdict {} / staged {} by {} {}: {}/{} -> {}:{}/{} {}",
            r["verdict"].as_str().unwrap_or("?"),
            r["staged"]["verdict"].as_str().unwrap_or("?"),
            r["staged"]["decided_by"]["kind"].as_str().unwrap_or("?"),
            r["staged"]["decided_by"]["policy"].as_str().unwrap_or("?"),
            r["source"]["namespace"].as_str().unwrap_or("?"),
            r["source"]["pod"].as_str().unwrap_or("?"),
            r["destination"]["ip"].as_str().unwrap_or("?"),
            r["destination"]["port"],
            r["destination"]["protocol"].as_str().unwrap_or("?"),
            names(&r["destination"]["names"]),
        )?;
    }
    ok &= staged.len() >= 3;
    let flows = story
        .files
        .wait_flows(Duration::from_secs(10), |r| r.len() >= 3);
    writeln!(out, "   the flow log has {} records so far", flows.len())?;

    writeln!(
        out,
        "3. chokepoint recommend --flows flows.log audit.log --namespace tenant-a:"
    )?;
    let recommended = match story.recommend(binary) {
        Ok(yaml) => yaml,
        Err(e) => {
            writeln!(out, "   recommend failed: {e}")?;
            return finish(out, story, false);
        }
    };
    for line in recommended.lines() {
        writeln!(out, "   | {line}")?;
    }

    let enforced = story.enforce(&recommended);
    writeln!(
        out,
        "4. applied the recommendation and switched the deny to enforced: {}",
        if enforced { "in force" } else { "NOT TAKEN" }
    )?;
    ok &= enforced;

    writeln!(out, "5. the same traffic, with the deny enforced:")?;
    ok &= show_traffic(out, &story.traffic())?;
    let refused = story.unobserved();
    writeln!(
        out,
        "   site-c {SITE_C} (never observed): {} {}",
        if refused.reset { "deny/RST" } else { "reached" },
        if refused.reset { "ok" } else { "MISMATCH" }
    )?;
    ok &= refused.reset;

    writeln!(
        out,
        "   chokepoint status (what each policy decided on this node):"
    )?;
    match story.status(binary) {
        Ok(table) => {
            for line in table.lines() {
                writeln!(out, "   | {line}")?;
            }
        }
        Err(e) => {
            writeln!(out, "   status failed: {e}")?;
            ok = false;
        }
    }

    let page = std::env::temp_dir().join("chokepoint-demo-map.html");
    match story.map(binary, &page) {
        Ok(summary) => writeln!(
            out,
            "6. the dependency map of these flows: {} ({summary}; open it in a browser)",
            page.display()
        )?,
        Err(e) => {
            writeln!(out, "6. map failed: {e}")?;
            ok = false;
        }
    }
    finish(out, story, ok)
}

fn show_traffic(out: &mut impl Write, t: &Traffic) -> Result<bool, Error> {
    let mark = |good: bool| if good { "ok" } else { "MISMATCH" };
    writeln!(
        out,
        "   dns {SITE_A_NAME}: {} {:?} {}",
        t.dns.status,
        t.dns.addresses,
        mark(t.dns.status == "NOERROR")
    )?;
    for (what, r) in [
        ("site-a by name", &t.site_a),
        ("site-b by address", &t.site_b),
    ] {
        writeln!(
            out,
            "   {what}: {} {}",
            if r.echo_ok { "allow" } else { "refused" },
            mark(r.echo_ok)
        )?;
    }
    Ok(t.worked())
}

fn names(v: &Value) -> String {
    match v.as_array() {
        Some(a) if !a.is_empty() => format!(
            "({})",
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        _ => String::new(),
    }
}

fn finish(out: &mut impl Write, mut story: Story, ok: bool) -> Result<bool, Error> {
    let stopped = story.stop();
    story.lab.teardown()?;
    writeln!(
        out,
        "cleaned up: gateway stopped ({}), lab namespaces deleted",
        stopped.map_or("not running".to_owned(), |s| s.to_string())
    )?;
    Ok(ok)
}
