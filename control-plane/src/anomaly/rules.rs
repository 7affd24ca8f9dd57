//! The rules' settings and their defaults (`[alerts.<rule>]` in `config/control-plane.toml`).

macro_rules! rules {
    ($($variant:ident => $name:literal,)+) => {
        /// The rules, named as in `alert.raised` reasons, the config and the metric's label.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Rule {
            $($variant,)+
        }

        impl Rule {
            pub const ALL: &'static [Rule] = &[$(Rule::$variant),+];

            pub fn as_str(&self) -> &'static str {
                match self {
                    $(Rule::$variant => $name,)+
                }
            }
        }
    };
}

rules! {
    DenialBurst => "denial_burst",
    NewIp => "new_ip",
    ReadSpike => "read_spike",
    Exfiltration => "exfiltration",
    AboveSensitivity => "above_sensitivity",
    AuthFailedBurst => "auth_failed_burst",
    UnusualHours => "unusual_hours",
}

/// Whether a rule runs, and whether its hits revoke the token they name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Switch {
    pub enabled: bool,
    pub revoke_token: bool,
}

impl Switch {
    const ON: Switch = Switch {
        enabled: true,
        revoke_token: false,
    };
}

/// `denial_burst`, `auth_failed_burst`: so many within a sliding window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Burst {
    pub enabled: bool,
    pub revoke_token: bool,
    pub threshold: u32,
    pub window_seconds: u32,
}

/// `read_spike`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spike {
    pub enabled: bool,
    pub revoke_token: bool,
    pub window_seconds: u32,
    pub factor: f64,
    pub min_reads: u32,
    pub min_history_windows: u32,
}

/// `unusual_hours`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hours {
    pub enabled: bool,
    pub revoke_token: bool,
    pub min_reads: u32,
    pub min_days: u32,
    pub max_share: f64,
}

impl Default for Spike {
    fn default() -> Self {
        Spike {
            enabled: true,
            revoke_token: false,
            window_seconds: 60,
            factor: 10.0,
            min_reads: 100,
            min_history_windows: 10,
        }
    }
}

impl Default for Hours {
    fn default() -> Self {
        Hours {
            enabled: true,
            revoke_token: false,
            min_reads: 200,
            min_days: 3,
            max_share: 0.01,
        }
    }
}

/// Every rule's settings (`[alerts.<rule>]` in the control plane's config).
#[derive(Clone, Debug, PartialEq)]
pub struct Rules {
    pub cooldown_seconds: u32,
    pub denial_burst: Burst,
    pub new_ip: Switch,
    pub read_spike: Spike,
    pub exfiltration: Switch,
    pub above_sensitivity: Switch,
    pub auth_failed_burst: Burst,
    pub unusual_hours: Hours,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            cooldown_seconds: 300,
            denial_burst: Burst {
                enabled: true,
                revoke_token: false,
                threshold: 10,
                window_seconds: 60,
            },
            new_ip: Switch::ON,
            read_spike: Spike::default(),
            exfiltration: Switch {
                enabled: true,
                revoke_token: true,
            },
            above_sensitivity: Switch::ON,
            auth_failed_burst: Burst {
                enabled: true,
                revoke_token: false,
                threshold: 20,
                window_seconds: 60,
            },
            unusual_hours: Hours::default(),
        }
    }
}

impl Rules {
    /// Whether hits of `rule` revoke the token they name.
    pub fn revokes(&self, rule: Rule) -> bool {
        match rule {
            Rule::DenialBurst => self.denial_burst.revoke_token,
            Rule::NewIp => self.new_ip.revoke_token,
            Rule::ReadSpike => self.read_spike.revoke_token,
            Rule::Exfiltration => self.exfiltration.revoke_token,
            Rule::AboveSensitivity => self.above_sensitivity.revoke_token,
            Rule::AuthFailedBurst => self.auth_failed_burst.revoke_token,
            Rule::UnusualHours => self.unusual_hours.revoke_token,
        }
    }
}
