# guestprep-script: suspend-bitlocker
# guestprep-output: json
# Cutover step only: suspends BitLocker protectors for a number of reboots, after the
# operator confirmed the recovery key is escrowed. Resume is automatic after the count.
$ParamsJson = [string]$args[0]
$p = ConvertFrom-Json -InputObject $ParamsJson
foreach ($needed in @('Get-BitLockerVolume', 'Suspend-BitLocker')) {
    if (-not (Get-Command -Name $needed -ErrorAction SilentlyContinue)) { throw ($needed + ' is not available on this guest') }
}
$steps = @()
foreach ($m in @($p.mounts)) {
    $v = Get-BitLockerVolume -MountPoint ([string]$m)
    if ([string]$v.ProtectionStatus -eq 'On') {
        Add-JournalEntry -Operation 'windows.bitlocker_suspend' -Kind 'bitlocker_suspend' -Target ([string]$m) -Detail @{ reboot_count = [int]$p.reboot_count; reversible = $true }
        $null = Suspend-BitLocker -MountPoint ([string]$m) -RebootCount ([int]$p.reboot_count)
        $steps += [ordered]@{ mount = [string]$m; suspended = $true; reboot_count = [int]$p.reboot_count }
    }
}
$escrow = [ordered]@{}
foreach ($m in @($p.mounts)) { $escrow[[string]$m] = $true }
Update-GuestprepState -Key 'bitlocker_escrow' -Value $escrow
Write-Result -Value ([ordered]@{ ok = $true; steps = $steps })
