//! Installing, verifying and removing the capture on the node (the current network namespace
//! of the calling thread).
//!
//! Chokepoint owns the `inet chokepoint` table, the route table [`CaptureSpec::route_table`] and
//! every ip rule that uses the capture mark or that table. Nothing else is read or changed.

use crate::Error;
use crate::cmd::{self, argv};
use crate::error::Leftovers;
use crate::render::{self, DROP_COMMENT, REDIRECT_CHAINS, SPOOFED_COUNTER, TPROXY_CHAINS};
use crate::spec::{CaptureMode, CaptureSpec, TABLE_NAME};

/// What [`install`] does when it finds capture state it did not just create.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InstallMode {
    /// Refuse: fail with [`Error::Conflict`], which lists what was found and the commands that
    /// remove it.
    Fresh,
    /// Take over: the table is replaced in one nft transaction (never absent in between), ip
    /// rules that already match are kept, other rules with the capture mark or the route table
    /// are deleted, foreign routes in the route table are flushed.
    Replace,
}

/// Applies the capture for `spec`: first the policy routing (TPROXY mode), then the nft script
/// of [`render()`](crate::render()), so packets are never marked before their route exists.
///
/// If a fresh install fails half-way, the ip rules and routes it added are removed again.
pub fn install(spec: &CaptureSpec, mode: InstallMode) -> Result<(), Error> {
    let rendered = render::render(spec)?;
    let state = Observed::read(spec)?;
    let leftovers = state.leftovers(spec);
    if !leftovers.is_empty() {
        match mode {
            InstallMode::Fresh => return Err(Error::Conflict(leftovers)),
            InstallMode::Replace => {
                tracing::info!(found = ?leftovers.found, "replacing existing capture state");
                state.clear_foreign(spec)?;
            }
        }
    }

    let mut applied: Vec<&Vec<String>> = Vec::new();
    for argv in &rendered.ip_commands {
        if mode == InstallMode::Replace && state.already_has(spec, argv) {
            continue;
        }
        if let Err(err) = cmd::run(argv, None) {
            if mode == InstallMode::Fresh {
                undo(&applied);
            }
            return Err(err);
        }
        applied.push(argv);
    }
    if let Err(err) = apply_nft(&rendered.nft) {
        if mode == InstallMode::Fresh {
            undo(&applied);
        }
        return Err(err);
    }
    // The queue rule and the notes go into the chains the script declared empty; until they
    // are there, new flows go to the proxy.
    if let Some(fast) = &spec.fast_path {
        let notes: Vec<_> = crate::render::addressed_families(spec).collect();
        crate::queue_rule::add(fast.first_queue, fast.queues, &notes).map_err(|source| {
            Error::Netlink {
                what: "adding the fast path's queue rule and notes",
                source,
            }
        })?;
    }
    tracing::info!(
        mode = ?spec.mode,
        families = ?spec.families,
        interfaces = ?spec.pod_interfaces,
        cidrs = ?spec.pod_cidrs,
        "capture installed"
    );
    Ok(())
}

/// Checks that the capture for `spec` is in place: the table with its chains, the listener
/// ports and the final drop rule, and (TPROXY mode) the ip rule and local route per family.
/// Reports everything that is missing at once.
pub fn verify(spec: &CaptureSpec) -> Result<(), Error> {
    spec.validate()?;
    let mut missing = Vec::new();
    match list_table()? {
        None => missing.push(format!("nftables table inet {TABLE_NAME}")),
        Some(listing) => {
            let chains: &[&str] = match spec.mode {
                CaptureMode::Tproxy => &TPROXY_CHAINS,
                CaptureMode::Redirect => &REDIRECT_CHAINS,
            };
            for chain in chains {
                if !listing.contains(&format!("chain {chain} {{")) {
                    missing.push(format!("chain {chain} in table inet {TABLE_NAME}"));
                }
            }
            let mut ports = vec![spec.tcp_port];
            if spec.mode == CaptureMode::Tproxy {
                ports.push(spec.udp_port);
            }
            ports.extend(spec.dns_port);
            for port in ports {
                if !listing.contains(&format!("to :{port}")) {
                    missing.push(format!("a rule diverting to port {port}"));
                }
            }
            if !listing.contains("fib saddr . iif oif missing") {
                missing.push("the reverse-path check (anti-spoofing)".to_string());
            }
            if !listing.contains(DROP_COMMENT) {
                missing.push("the final drop rule (fail closed)".to_string());
            }
            if spec.fast_path.is_some()
                && !listing.contains(&format!("chain {} {{", render::CLOSING_CHAIN))
            {
                missing.push(format!(
                    "chain {} in table inet {TABLE_NAME}",
                    render::CLOSING_CHAIN
                ));
            }
            if spec.fast_path.is_some() && !queue_rule_present()? {
                missing.push("the fast path's queue rule (chain fast_queue)".to_string());
            }
        }
    }
    if spec.mode == CaptureMode::Tproxy {
        let state = Observed::read(spec)?;
        for (flag, _) in render::families(spec.families) {
            if !state
                .rules
                .iter()
                .any(|r| r.family == flag && r.is_ours(spec))
            {
                missing.push(format!(
                    "ip {flag} rule pref {} fwmark {} lookup {}",
                    spec.rule_priority,
                    render::fwmark_selector(spec.capture_mark, spec.mark_mask),
                    spec.route_table
                ));
            }
            if !state.routes.iter().any(|r| r.family == flag && r.is_ours()) {
                missing.push(format!(
                    "ip {flag} route local default dev lo table {}",
                    spec.route_table
                ));
            }
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Error::NotInstalled { missing })
    }
}

/// Whether the queue chain holds the NFQUEUE rule. nft's text listing prints an xtables
/// target in an `inet` table as an empty line; its JSON names it.
fn queue_rule_present() -> Result<bool, Error> {
    let json = cmd::run(
        &cmd::argv([
            "nft",
            "-j",
            "list",
            "chain",
            "inet",
            TABLE_NAME,
            "fast_queue",
        ]),
        None,
    )?;
    Ok(queue_rule_listed(&json))
}

fn queue_rule_listed(json: &str) -> bool {
    json.contains(r#""xt": {"type": "target", "name": "NFQUEUE"}"#)
}

/// Removes the table, every ip rule that uses the capture mark or the route table, and the
/// routes in the route table, for both families. Idempotent: removing nothing succeeds.
///
/// After this, pod traffic is no longer captured (it flows freely); call it only on an orderly
/// shutdown the operator asked for.
pub fn remove(spec: &CaptureSpec) -> Result<(), Error> {
    apply_nft(&format!(
        "table inet {TABLE_NAME}\ndelete table inet {TABLE_NAME}\n"
    ))?;
    let state = Observed::read_tolerant(spec, true)?;
    state.delete_rules(|_| true)?;
    state.flush_routes(|_| true)?;
    tracing::info!("capture removed");
    Ok(())
}

fn apply_nft(script: &str) -> Result<(), Error> {
    cmd::run(&argv(["nft", "-f", "-"]), Some(script)).map(drop)
}

/// Best effort: deletes the rules and routes a failed fresh install added.
fn undo(applied: &[&Vec<String>]) {
    for argv in applied.iter().rev() {
        let mut undo = (*argv).clone();
        if let Some(verb) = undo.iter_mut().find(|a| *a == "add" || *a == "replace") {
            *verb = "del".to_string();
        }
        if let Err(err) = cmd::run(&undo, None) {
            tracing::warn!(%err, "could not undo a partial install");
        }
    }
}

/// `nft list table inet chokepoint`, or `None` when the table does not exist.
/// Packets the capture dropped as spoofed (the reverse-path check's named counter), or
/// `None` when the table is not installed.
pub fn spoofed_packets() -> Result<Option<u64>, Error> {
    let listing = match cmd::run(
        &argv([
            "nft",
            "list",
            "counter",
            "inet",
            TABLE_NAME,
            SPOOFED_COUNTER,
        ]),
        None,
    ) {
        Ok(listing) => listing,
        Err(Error::Command { stderr, .. }) if stderr.contains("No such file or directory") => {
            return Ok(None);
        }
        Err(err) => return Err(err),
    };
    Ok(counter_packets(&listing))
}

/// The `packets N` of an `nft list counter` listing.
fn counter_packets(listing: &str) -> Option<u64> {
    let mut words = listing.split_whitespace();
    words.find(|w| *w == "packets")?;
    words.next()?.parse().ok()
}

fn list_table() -> Result<Option<String>, Error> {
    match cmd::run(&argv(["nft", "list", "table", "inet", TABLE_NAME]), None) {
        Ok(listing) => Ok(Some(listing)),
        Err(Error::Command { stderr, .. }) if stderr.contains("No such file or directory") => {
            Ok(None)
        }
        Err(err) => Err(err),
    }
}

/// An ip rule that uses the capture mark or the route table.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ObservedRule {
    family: &'static str,
    pref: u32,
    /// Everything after `pref:`, e.g. `from all fwmark 0x1000/0x3000 lookup 1287`.
    rest: String,
    fwmark: Option<String>,
    lookup: Option<String>,
}

impl ObservedRule {
    /// Parses one line of `ip -N rule show`.
    fn parse(family: &'static str, line: &str) -> Option<ObservedRule> {
        let (pref, rest) = line.split_once(':')?;
        let pref = pref.trim().parse().ok()?;
        let rest = rest.split_whitespace().collect::<Vec<_>>().join(" ");
        let value_of = |key: &str| {
            let mut tokens = rest.split(' ');
            tokens.find(|t| *t == key)?;
            tokens.next().map(str::to_string)
        };
        Some(ObservedRule {
            family,
            pref,
            fwmark: value_of("fwmark"),
            lookup: value_of("lookup"),
            rest,
        })
    }

    fn mark_value(&self) -> Option<u32> {
        let text = self.fwmark.as_deref()?;
        let value = text.split('/').next()?;
        u32::from_str_radix(value.trim_start_matches("0x"), 16).ok()
    }

    fn is_relevant(&self, spec: &CaptureSpec) -> bool {
        self.mark_value() == Some(spec.capture_mark)
            || self.lookup.as_deref() == Some(spec.route_table.to_string().as_str())
    }

    /// Exactly the rule [`render()`](crate::render()) adds.
    fn is_ours(&self, spec: &CaptureSpec) -> bool {
        let fwmark = if spec.mark_mask == u32::MAX {
            format!("{:#x}", spec.capture_mark)
        } else {
            render::fwmark_selector(spec.capture_mark, spec.mark_mask)
        };
        self.pref == spec.rule_priority
            && self.rest == format!("from all fwmark {fwmark} lookup {}", spec.route_table)
    }

    fn delete_argv(&self) -> Vec<String> {
        let mut out = argv(["ip", self.family, "rule", "del", "pref"]);
        out.push(self.pref.to_string());
        if let Some(mark) = &self.fwmark {
            out.extend(argv(["fwmark", mark]));
        }
        if let Some(table) = &self.lookup {
            out.extend(argv(["lookup", table]));
        }
        out
    }
}

/// A route in the route table.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ObservedRoute {
    family: &'static str,
    line: String,
}

impl ObservedRoute {
    fn is_ours(&self) -> bool {
        self.line.starts_with("local default dev lo ") || self.line == "local default dev lo"
    }
}

/// The capture-related state of the current network namespace.
#[derive(Debug, Default)]
struct Observed {
    table: bool,
    route_table: u32,
    rules: Vec<ObservedRule>,
    routes: Vec<ObservedRoute>,
}

impl Observed {
    fn read(spec: &CaptureSpec) -> Result<Observed, Error> {
        Observed::read_tolerant(spec, false)
    }

    /// Reads the table, the relevant rules and the routes of the route table for both
    /// families. Listing a family fails when the kernel lacks it (IPv6 disabled); that counts
    /// as "nothing there" when `tolerate` is set or the spec does not serve the family.
    fn read_tolerant(spec: &CaptureSpec, tolerate: bool) -> Result<Observed, Error> {
        let mut state = Observed {
            table: list_table()?.is_some(),
            route_table: spec.route_table,
            ..Observed::default()
        };
        for (flag, serves) in [("-4", spec.families.v4()), ("-6", spec.families.v6())] {
            let rules = match cmd::run(&argv(["ip", "-N", flag, "rule", "show"]), None) {
                Ok(out) => out,
                Err(err) if tolerate || !serves => {
                    tracing::debug!(%err, "ip {flag} rules not readable, assuming none");
                    continue;
                }
                Err(err) => return Err(err),
            };
            state.rules.extend(
                rules
                    .lines()
                    .filter_map(|line| ObservedRule::parse(flag, line))
                    .filter(|rule| rule.is_relevant(spec)),
            );
            let table = spec.route_table.to_string();
            match cmd::run(&argv(["ip", flag, "route", "show", "table", &table]), None) {
                Ok(out) => {
                    state
                        .routes
                        .extend(
                            out.lines()
                                .map(str::trim)
                                .filter(|l| !l.is_empty())
                                .map(|line| ObservedRoute {
                                    family: flag,
                                    line: line.to_string(),
                                }),
                        )
                }
                // The kernel has no such table yet.
                Err(Error::Command { stderr, .. }) if stderr.contains("does not exist") => {}
                Err(err) if tolerate || !serves => {
                    tracing::debug!(%err, "ip {flag} routes not readable, assuming none");
                }
                Err(err) => return Err(err),
            }
        }
        Ok(state)
    }

    fn leftovers(&self, spec: &CaptureSpec) -> Leftovers {
        let mut out = Leftovers::default();
        if self.table {
            out.found.push(format!(
                "nftables table inet {TABLE_NAME} (see: nft list table inet {TABLE_NAME})"
            ));
            out.remove_commands
                .push(format!("nft delete table inet {TABLE_NAME}"));
        }
        for rule in &self.rules {
            out.found.push(format!(
                "ip {} rule: {}: {}",
                rule.family, rule.pref, rule.rest
            ));
            out.remove_commands.push(cmd::display(&rule.delete_argv()));
        }
        for route in &self.routes {
            out.found.push(format!(
                "ip {} route in table {}: {}",
                route.family, spec.route_table, route.line
            ));
        }
        for family in ["-4", "-6"] {
            if self.routes.iter().any(|r| r.family == family) {
                out.remove_commands.push(format!(
                    "ip {family} route flush table {}",
                    spec.route_table
                ));
            }
        }
        out
    }

    /// For [`InstallMode::Replace`]: deletes the rules `spec` does not want and flushes the
    /// route table of a family that holds a route `spec` does not want. The nft table is left
    /// for the replacing transaction.
    fn clear_foreign(&self, spec: &CaptureSpec) -> Result<(), Error> {
        self.delete_rules(|rule| !wants_rule(spec, rule))?;
        let foreign: Vec<&str> = self
            .routes
            .iter()
            .filter(|r| !wants_route(spec, r))
            .map(|r| r.family)
            .collect();
        self.flush_routes(|family| foreign.contains(&family))
    }

    fn delete_rules(&self, which: impl Fn(&ObservedRule) -> bool) -> Result<(), Error> {
        for rule in self.rules.iter().filter(|r| which(r)) {
            match cmd::run(&rule.delete_argv(), None) {
                Ok(_) => {}
                // Gone already (someone else removed it meanwhile): that is what we wanted.
                Err(Error::Command { stderr, .. }) if stderr.contains("No such file") => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }

    fn flush_routes(&self, which: impl Fn(&str) -> bool) -> Result<(), Error> {
        for family in ["-4", "-6"] {
            if which(family) && self.routes.iter().any(|r| r.family == family) {
                let table = self.route_table.to_string();
                cmd::run(
                    &argv(["ip", family, "route", "flush", "table", &table]),
                    None,
                )?;
            }
        }
        Ok(())
    }

    /// Whether `argv` (one of the rendered ip commands) is already in effect, so a replace can
    /// skip it and never leave a gap.
    fn already_has(&self, spec: &CaptureSpec, argv: &[String]) -> bool {
        let family = argv.get(1).map(String::as_str);
        match argv.get(2).map(String::as_str) {
            Some("rule") => self
                .rules
                .iter()
                .any(|r| Some(r.family) == family && wants_rule(spec, r)),
            // `ip route replace` is idempotent and gap-free; run it anyway.
            _ => false,
        }
    }
}

/// Whether `spec` itself would install `family` (`-4`/`-6`) policy routing.
fn routes_family(spec: &CaptureSpec, family: &str) -> bool {
    spec.mode == CaptureMode::Tproxy
        && render::families(spec.families)
            .iter()
            .any(|(flag, _)| *flag == family)
}

/// Whether `rule` is exactly the rule `spec` installs (right mode, family, pref, mark, table).
fn wants_rule(spec: &CaptureSpec, rule: &ObservedRule) -> bool {
    routes_family(spec, rule.family) && rule.is_ours(spec)
}

/// Whether `route` is exactly the route `spec` installs.
fn wants_route(spec: &CaptureSpec, route: &ObservedRoute) -> bool {
    routes_family(spec, route.family) && route.is_ours()
}

#[cfg(test)]
mod tests {
    use super::counter_packets;

    #[test]
    fn the_packet_count_is_read_from_an_nft_counter_listing() {
        let listing = "table inet chokepoint {\n\tcounter spoofed_sources {\n\t\tpackets 12 bytes 480\n\t}\n}\n";
        assert_eq!(counter_packets(listing), Some(12));
        assert_eq!(counter_packets("table inet chokepoint {\n}\n"), None);
    }
}
