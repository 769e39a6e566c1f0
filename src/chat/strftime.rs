//! `strftime_now(format)`: Python's `datetime.now().strftime(format)` for the directives
//! templates use (Llama 3.x prints "Today Date: 07 Mar 2025"), computed from a Unix time
//! in UTC (ember reads no time zone database; an app that wants local time passes it).

use std::fmt::Write;

const DAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];
const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// A broken-down UTC time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Civil {
    pub year: i64,
    /// 1..=12
    pub month: u32,
    /// 1..=31
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    /// 0 = Monday
    pub weekday: u32,
    /// 1..=366
    pub yday: u32,
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

/// Howard Hinnant's days-to-civil algorithm.
pub(crate) fn civil(unix: i64) -> Civil {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    const CUM: [u32; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let yday = CUM[(month - 1) as usize] + day + u32::from(month > 2 && is_leap(year));
    Civil {
        year,
        month,
        day,
        hour: (secs / 3600) as u32,
        minute: (secs / 60 % 60) as u32,
        second: (secs % 60) as u32,
        // 1970-01-01 was a Thursday.
        weekday: (days + 3).rem_euclid(7) as u32,
        yday,
    }
}

/// Formats `t` as C's strftime (glibc, which Python calls) does for the directives below;
/// `%-d` style (no padding) as glibc; an unknown directive is copied as it is.
pub(crate) fn strftime(fmt: &str, t: &Civil) -> String {
    let mut out = String::new();
    let mut it = fmt.chars();
    while let Some(c) = it.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut d = it.next();
        let no_pad = d == Some('-');
        if no_pad {
            d = it.next();
        }
        let num = |out: &mut String, v: i64, width: usize| {
            if no_pad {
                let _ = write!(out, "{v}");
            } else {
                let _ = write!(out, "{v:0width$}");
            }
        };
        let h12 = if t.hour % 12 == 0 { 12 } else { t.hour % 12 };
        let day = DAYS[t.weekday as usize];
        let month = MONTHS[(t.month - 1) as usize];
        match d {
            Some('Y') => {
                let _ = write!(out, "{}", t.year);
            }
            Some('y') => num(&mut out, t.year.rem_euclid(100), 2),
            Some('m') => num(&mut out, t.month.into(), 2),
            Some('d') => num(&mut out, t.day.into(), 2),
            Some('e') => {
                let _ = write!(out, "{:2}", t.day);
            }
            Some('j') => num(&mut out, t.yday.into(), 3),
            Some('H') => num(&mut out, t.hour.into(), 2),
            Some('I') => num(&mut out, h12.into(), 2),
            Some('M') => num(&mut out, t.minute.into(), 2),
            Some('S') => num(&mut out, t.second.into(), 2),
            Some('p') => out.push_str(if t.hour < 12 { "AM" } else { "PM" }),
            Some('A') => out.push_str(day),
            Some('a') => out.push_str(&day[..3]),
            Some('B') => out.push_str(month),
            Some('b') | Some('h') => out.push_str(&month[..3]),
            Some('u') => {
                let _ = write!(out, "{}", t.weekday + 1);
            }
            Some('w') => {
                let _ = write!(out, "{}", (t.weekday + 1) % 7);
            }
            Some('F') => {
                let _ = write!(out, "{}-{:02}-{:02}", t.year, t.month, t.day);
            }
            Some('T') => {
                let _ = write!(out, "{:02}:{:02}:{:02}", t.hour, t.minute, t.second);
            }
            Some('D') => {
                let _ = write!(
                    out,
                    "{:02}/{:02}/{:02}",
                    t.month,
                    t.day,
                    t.year.rem_euclid(100)
                );
            }
            Some('c') => {
                let _ = write!(
                    out,
                    "{} {} {:2} {:02}:{:02}:{:02} {}",
                    &day[..3],
                    &month[..3],
                    t.day,
                    t.hour,
                    t.minute,
                    t.second,
                    t.year
                );
            }
            Some('x') => {
                let _ = write!(
                    out,
                    "{:02}/{:02}/{:02}",
                    t.month,
                    t.day,
                    t.year.rem_euclid(100)
                );
            }
            Some('X') => {
                let _ = write!(out, "{:02}:{:02}:{:02}", t.hour, t.minute, t.second);
            }
            // A naive datetime (Python's datetime.now()) has no zone: %Z and %z are empty.
            Some('Z') | Some('z') => {}
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                if no_pad {
                    out.push('-');
                }
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        // 2025-03-07 14:05:09 UTC, a Friday, day 66 of the year.
        let t = civil(1_741_356_309);
        assert_eq!((t.year, t.month, t.day), (2025, 3, 7));
        assert_eq!(
            (t.hour, t.minute, t.second, t.weekday, t.yday),
            (14, 5, 9, 4, 66)
        );
        let t = civil(951_782_400); // 2000-02-29
        assert_eq!((t.year, t.month, t.day, t.yday), (2000, 2, 29, 60));
        let t = civil(-1); // 1969-12-31 23:59:59, a Wednesday
        assert_eq!(
            (t.year, t.month, t.day, t.hour, t.weekday),
            (1969, 12, 31, 23, 2)
        );
    }

    #[test]
    fn formats_as_python() {
        let t = civil(1_741_356_309);
        assert_eq!(strftime("%d %b %Y", &t), "07 Mar 2025");
        assert_eq!(
            strftime("%B %-d, %Y %I:%M %p %A %j %%", &t),
            "March 7, 2025 02:05 PM Friday 066 %"
        );
        assert_eq!(
            strftime("%Y-%m-%d %H:%M:%S%z %q", &t),
            "2025-03-07 14:05:09 %q"
        );
        assert_eq!(strftime("%c", &t), "Fri Mar  7 14:05:09 2025");
    }
}
