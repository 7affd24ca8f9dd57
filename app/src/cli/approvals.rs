//! `approval list|show|approve|deny` and the ceiling commands `agent show|allow|deny`.

use std::io;

use agent_secret_core::api::{
    AgentInfo, ApprovalInfo, CeilingChange, DecideApproval, SetTrustTier,
};

use super::api::ControlPlane;
use super::call::{checked_id, client, show, Human};
use super::failure::Failure;
use super::output::Output;
use super::{credentials, ApprovalCommand, GlobalArgs};

pub async fn approval(
    global: &GlobalArgs,
    cmd: ApprovalCommand,
    out: Output,
) -> Result<(), Failure> {
    let token = credentials::operator_token(global)?;
    let api = ControlPlane::new(client(global)?, &token);
    match cmd {
        ApprovalCommand::List { status } => {
            let reply = api.list_approvals(status.as_deref()).await?;
            show(out, &reply, |list, w| {
                list.approvals.iter().try_for_each(|a| {
                    writeln!(
                        w,
                        "{}  {}  {}  agent {}  {} of {} approvals  {} secrets up to {}",
                        a.id,
                        a.status,
                        a.token_id
                            .as_deref()
                            .map_or("ceiling".to_owned(), |t| format!("token {t}")),
                        a.agent_id,
                        a.approvals_counted,
                        a.required_approvals,
                        a.unlocks.secrets.len(),
                        a.unlocks.highest_sensitivity().as_str()
                    )
                })
            })
        }
        ApprovalCommand::Show { id } => {
            let reply = api.approval(checked_id(&id)?).await?;
            show(out, &reply, |a, w| print_approval(&a, w))
        }
        ApprovalCommand::Approve {
            id,
            comment,
            digest,
        } => {
            let body = DecideApproval { comment, digest };
            let reply = api.decide(checked_id(&id)?, true, &body).await?;
            show(out, &reply, |a, w| print_approval(&a, w))
        }
        ApprovalCommand::Deny { id, comment } => {
            let body = DecideApproval {
                comment,
                digest: None,
            };
            let reply = api.decide(checked_id(&id)?, false, &body).await?;
            show(out, &reply, |a, w| print_approval(&a, w))
        }
    }
}

pub async fn show_agent(api: &ControlPlane<'_>, id: &str, out: Output) -> Result<(), Failure> {
    let reply = api.agent(checked_id(id)?).await?;
    show(out, &reply, |a, w| print_agent(&a, w))
}

pub async fn change_ceiling(
    api: &ControlPlane<'_>,
    id: &str,
    scopes: Vec<String>,
    allow: bool,
    out: Output,
) -> Result<(), Failure> {
    let reply = api
        .change_ceiling(checked_id(id)?, allow, &CeilingChange { scopes })
        .await?;
    show(out, &reply, |c, w| {
        if c.tokens_revoked > 0 {
            out.note(&format!(
                "{} token(s) outside the new ceiling were revoked",
                c.tokens_revoked
            ));
        }
        writeln!(w, "agent {} may be granted:", c.agent_id)?;
        c.ceiling.iter().try_for_each(|s| writeln!(w, "  {s}"))
    })
}

pub async fn request_access(
    api: &ControlPlane<'_>,
    id: &str,
    scopes: Vec<String>,
    out: Output,
) -> Result<(), Failure> {
    let reply = api
        .request_access(checked_id(id)?, &CeilingChange { scopes })
        .await?;
    show(out, &reply, |a, w| {
        out.note(&format!(
            "approval {} filed: another approver must approve it",
            a.id
        ));
        print_approval(&a, w)
    })
}

pub async fn set_tier(
    api: &ControlPlane<'_>,
    id: &str,
    tier: i32,
    out: Output,
) -> Result<(), Failure> {
    let body = SetTrustTier { trust_tier: tier };
    let reply = api.set_trust_tier(checked_id(id)?, &body).await?;
    show(out, &reply, |a, w| print_agent(&a, w))
}

fn print_agent(a: &AgentInfo, w: Human<'_>) -> io::Result<()> {
    writeln!(w, "agent {} ({})", a.id, a.name)?;
    writeln!(w, "  trust tier  {}", a.trust_tier)?;
    if let Some(by) = &a.created_by {
        writeln!(w, "  created by  operator {by}")?;
    }
    if let Some(at) = a.revoked_at {
        writeln!(w, "  revoked at  {at}")?;
    }
    if a.ceiling.is_empty() {
        return writeln!(w, "  ceiling     (empty: no token can be granted)");
    }
    writeln!(w, "  ceiling")?;
    a.ceiling.iter().try_for_each(|s| writeln!(w, "    {s}"))
}

fn print_approval(a: &ApprovalInfo, w: Human<'_>) -> io::Result<()> {
    let u = &a.unlocks;
    writeln!(w, "approval {} ({})", a.id, a.status)?;
    match &a.token_id {
        Some(token) => writeln!(w, "  token       {token}")?,
        None => writeln!(w, "  token       none: widens the agent's ceiling only")?,
    }
    writeln!(w, "  agent       {} (tier {})", u.agent_id, u.trust_tier)?;
    writeln!(w, "  requested   by {} at {}", a.requested_by, a.created_at)?;
    writeln!(w, "  scopes      {}", u.scopes.join(" "))?;
    if !u.ceiling_additions.is_empty() {
        writeln!(
            w,
            "  widens the ceiling by {}",
            u.ceiling_additions.join(" ")
        )?;
    }
    writeln!(w, "  unlocks")?;
    for s in &u.secrets {
        writeln!(w, "    {}  ({})", s.path, s.sensitivity.as_str())?;
    }
    let uses = u.max_uses.map_or("unlimited".to_owned(), |n| n.to_string());
    let ips = if u.ip_allowlist.is_empty() {
        "any".to_owned()
    } else {
        u.ip_allowlist.join(" ")
    };
    writeln!(w, "  ttl {} s, uses {uses}, from {ips}", u.ttl_seconds)?;
    writeln!(w, "  digest      {}", a.digest)?;
    writeln!(
        w,
        "  approvals   {} of {} (time lock {} s after the last){}",
        a.approvals_counted,
        a.required_approvals,
        a.delay_seconds,
        a.time_lock_until
            .map(|t| format!("; active from {t}"))
            .unwrap_or_default()
    )?;
    for d in &a.decisions {
        writeln!(
            w,
            "  {} by operator {} at {} on digest {}{}",
            d.decision,
            d.operator_id,
            d.decided_at,
            &d.digest[..16.min(d.digest.len())],
            d.comment
                .as_deref()
                .map(|c| format!(": {c}"))
                .unwrap_or_default()
        )?;
    }
    writeln!(w, "  expires     {}", a.expires_at)
}
