"""Tables and figures with bootstrap intervals from run folders."""
