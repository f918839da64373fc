def median(values):
    s = sorted(values)
    n = len(s)
    if n == 0:
        raise ValueError("median of an empty list")
    return s[n // 2]
