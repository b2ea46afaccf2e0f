//! What a client can take, from what it says it is (`ClientInfo`: on `/rtc` the `sdk`,
//! `browser`, … query parameters). LiveKit's server keeps the same exceptions: redundant audio
//! (RED) is not offered to Firefox and Safari, and Safari's subscriber sections are not
//! recycled for other tracks (a Safari insertable-streams bug loses tracks mid-stream).

/// Behaviour switches for one participant's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientTraits {
    /// Offer and accept RFC 2198 redundant audio (`red.rs`).
    pub audio_red: bool,
    /// Give a subscriber section that fell dormant to the next track of its kind
    /// (`negotiation.rs`).
    pub recycle_sections: bool,
}

impl Default for ClientTraits {
    fn default() -> Self {
        Self {
            audio_red: true,
            recycle_sections: true,
        }
    }
}

impl ClientTraits {
    /// From the `browser` the client reports, else the browser its `User-Agent` names (as
    /// LiveKit's server fills in what today's livekit-client no longer sends); native SDKs
    /// send neither.
    pub fn of(browser: Option<&str>, user_agent: Option<&str>) -> Self {
        match (browser, user_agent) {
            (Some(b), _) if !b.is_empty() => Self::from_browser(b),
            (_, Some(ua)) => Self::from_browser(browser_of_user_agent(ua)),
            _ => Self::default(),
        }
    }

    /// From a browser name as `ClientInfo.browser` carries it (empty for native SDKs).
    pub fn from_browser(browser: &str) -> Self {
        let firefox =
            browser.eq_ignore_ascii_case("firefox") || browser.eq_ignore_ascii_case("firefox mobile");
        let safari = browser.eq_ignore_ascii_case("safari");
        Self {
            audio_red: !(firefox || safari),
            recycle_sections: !safari,
        }
    }
}

/// The browser family a `User-Agent` header names, for the families treated differently:
/// Firefox, and Safari (WebKit whose UA does not also claim Chrome, Chromium or Edge).
fn browser_of_user_agent(ua: &str) -> &'static str {
    if ua.contains("Firefox/") || ua.contains("FxiOS/") {
        "firefox"
    } else if ua.contains("Safari/")
        && !["Chrome/", "Chromium/", "CriOS/", "Edg/"]
            .iter()
            .any(|c| ua.contains(c))
    {
        "safari"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_agents_name_the_browser_when_the_client_does_not() {
        let firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0";
        let safari = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15";
        let chrome = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
        assert!(!ClientTraits::of(None, Some(firefox)).audio_red);
        assert!(!ClientTraits::of(None, Some(safari)).recycle_sections);
        assert_eq!(ClientTraits::of(None, Some(chrome)), ClientTraits::default());
        assert_eq!(ClientTraits::of(None, None), ClientTraits::default());
        // What the client says wins over its User-Agent.
        assert_eq!(
            ClientTraits::of(Some("Chrome"), Some(firefox)),
            ClientTraits::default()
        );
    }

    #[test]
    fn firefox_and_safari_get_no_red_and_safari_no_recycling() {
        assert_eq!(ClientTraits::from_browser(""), ClientTraits::default());
        assert_eq!(ClientTraits::from_browser("Chrome"), ClientTraits::default());
        let ff = ClientTraits::from_browser("Firefox");
        assert!(!ff.audio_red && ff.recycle_sections);
        let safari = ClientTraits::from_browser("Safari");
        assert!(!safari.audio_red && !safari.recycle_sections);
    }
}
